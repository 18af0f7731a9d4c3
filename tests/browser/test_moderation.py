"""Issue 12 in the page: live access changes, moderators, deletions, links, the member list, focus."""

from __future__ import annotations

from typing import Any

from playwright.async_api import expect

from tests.browser.conftest import Tab
from tests.browser.test_page import visible_controls_without_label
from tests.helpers import Api

LIVE = 2000  # ms: an access change shows without a reload within this


def member(tab: Tab, name: str) -> Any:
    return tab.page.locator(f'#member-list li[data-user="{name}"]')


def message(tab: Tab, room: str, text: str) -> Any:
    return tab.log(room).locator("li.msg").filter(has_text=text)


async def test_access_changes_reach_the_room_list_live_and_moderators_manage_grants_in_the_room(
    open_tab: Any, admin: Api
) -> None:
    for name in ("carol", "mod", "bob"):
        await admin.create_user(name)
    await admin.create_room("team", title="Team room")
    await admin.grant("team", "mod", "moderate")
    await admin.grant("team", "bob", "write")
    carol, mod = await open_tab(), await open_tab()
    await carol.sign_in("carol")
    await expect(carol.page.locator("#rooms-empty")).to_be_visible()

    # An admin's grant and revoke reach the waiting user's list without a reload.
    await admin.grant("team", "carol", "read")
    await expect(carol.room_button("team")).to_be_visible(timeout=LIVE)
    await expect(carol.room_button("team")).to_contain_text("read only")
    await expect(carol.page.locator("#rooms-empty")).to_be_hidden()
    await expect(carol.page.locator("#notices")).to_contain_text("You now have access to room team")
    await admin.revoke("team", "carol")
    await expect(carol.room_button("team")).to_have_count(0, timeout=LIVE)
    await expect(carol.page.locator("#rooms-empty")).to_be_visible()

    # The member list: everyone with access, online or not, marked in words.
    await mod.sign_in("mod")
    await expect(mod.room_button("team")).to_contain_text("moderator")
    await mod.open_room("team")
    await expect(member(mod, "mod")).to_contain_text("online")
    await expect(member(mod, "mod")).to_have_attribute("data-online", "true")
    await expect(member(mod, "bob")).to_contain_text("offline")
    await expect(member(mod, "bob")).to_have_attribute("data-online", "false")
    await expect(mod.page.locator("#members-summary")).to_have_text("Members 1 of 2 online")

    # The moderator grants read from the room; the user's list follows at once.
    panel = mod.page.get_by_role("region", name="Manage access to team")
    await mod.page.get_by_role("button", name="Manage access").click()
    await expect(panel).to_be_visible()
    await expect(mod.page.locator("#access-user")).to_be_focused()
    await expect(panel.get_by_label("Role", exact=True).locator("option")).to_have_text(
        ["write (read and post)", "read only"])  # moderators never give moderate
    await panel.get_by_label("Username").fill("carol")
    await panel.get_by_label("Role", exact=True).select_option("read")
    await panel.get_by_role("button", name="Grant", exact=True).click()
    await expect(panel.locator("#access-status")).to_have_text("carol may now read in team.")
    await expect(panel.locator('#access-list li[data-user="carol"] select')).to_have_value("read")
    await expect(panel.locator('#access-list li[data-user="mod"]')).to_contain_text("moderator")
    await expect(panel.locator('#access-list li[data-user="mod"] button')).to_have_count(0)
    await expect(carol.room_button("team")).to_contain_text("read only", timeout=LIVE)
    await expect(member(mod, "carol")).to_contain_text("offline")
    assert await visible_controls_without_label(mod) == []

    await carol.open_room("team")
    await expect(carol.page.locator("#read-only-note")).to_be_visible()
    await expect(carol.page.locator("#manage-access")).to_be_hidden()
    await expect(member(mod, "carol")).to_have_attribute("data-online", "true")
    await expect(member(carol, "mod")).to_have_attribute("data-online", "true")
    await expect(member(carol, "bob")).to_contain_text("offline")

    # A changed role takes effect in the open room; a revoke takes the room away.
    await panel.get_by_label("Role of carol in team").select_option("write")
    await expect(panel.locator("#access-status")).to_have_text("carol now has write in team.")
    await expect(carol.page.get_by_role("textbox", name="Message")).to_be_visible(timeout=LIVE)
    await panel.get_by_role("button", name="Revoke carol from team").click()
    await expect(panel.locator("#access-status")).to_have_text("carol no longer has access to team.")
    await expect(carol.room_button("team")).to_have_count(0, timeout=LIVE)
    await expect(carol.page.locator("#room-placeholder")).to_contain_text("You no longer have access to room team")
    await expect(panel.locator('#access-list li[data-user="carol"]')).to_have_count(0)


async def test_focus_links_and_deletions_by_authors_and_moderators(open_tab: Any, admin: Api) -> None:
    for name in ("alice", "bob", "mod"):
        await admin.create_user(name)
    await admin.create_room("team", title="Team room")
    await admin.grant("team", "alice")
    await admin.grant("team", "bob")
    await admin.grant("team", "mod", "moderate")
    alice, bob, mod = await open_tab(), await open_tab(), await open_tab()
    for tab, name in ((alice, "alice"), (bob, "bob"), (mod, "mod")):
        await tab.sign_in(name)
    await bob.open_room("team")
    await mod.open_room("team")

    # Focus lands in the message box: typing right after the click loses nothing.
    await alice.room_button("team").click()
    await expect(alice.page.get_by_role("textbox", name="Message")).to_be_focused()
    await alice.page.keyboard.type("hello world")
    await alice.page.keyboard.press("Enter")
    await expect(bob.messages("team")).to_have_text(["hello world"])

    # Links: http(s) only, opening in a new tab without the opener or the referrer.
    await bob.say("see https://example.com/a?b=1. or javascript:alert(1) or http://x.test/(y)")
    text = message(alice, "team", "example.com").locator(".text")
    await expect(text).to_have_text("see https://example.com/a?b=1. or javascript:alert(1) or http://x.test/(y)")
    links = text.locator("a")
    await expect(links).to_have_text(["https://example.com/a?b=1", "http://x.test/(y)"])
    first = text.locator('a[href^="https://"]')
    await expect(first).to_have_attribute("href", "https://example.com/a?b=1")
    await expect(first).to_have_attribute("rel", "noopener noreferrer")
    await expect(first).to_have_attribute("target", "_blank")
    await expect(alice.page.locator('a[href^="javascript"]')).to_have_count(0)

    # Who may delete what: authors their own, moderators everything, members nothing else.
    await expect(message(alice, "team", "example.com").locator("button.delete")).to_have_count(0)
    await expect(message(alice, "team", "hello world").locator("button.delete")).to_have_count(1)
    await expect(message(mod, "team", "hello world").locator("button.delete")).to_have_count(1)
    await expect(message(mod, "team", "example.com").locator("button.delete")).to_have_count(1)
    assert await visible_controls_without_label(mod) == []

    delete = message(mod, "team", "example.com").get_by_role("button", name="Delete the message from bob")
    await delete.click()
    await expect(delete).to_have_text("Confirm delete")
    await message(mod, "team", "example.com").get_by_role("button", name="Confirm: delete the message from bob").click()
    for tab in (alice, bob, mod):
        await expect(tab.messages("team")).to_have_text(["hello world", "message deleted"])
        await expect(tab.log("team").locator("li.msg.deleted .who")).to_have_text(["bob"])
        await expect(tab.log("team").locator("li.msg.deleted button")).to_have_count(0)

    own = message(alice, "team", "hello world").get_by_role("button", name="Delete the message from alice")
    await own.click()
    await own.click()  # the same button, now "Confirm delete"
    for tab in (alice, bob, mod):
        await expect(tab.messages("team")).to_have_text(["message deleted", "message deleted"])

    await mod.page.reload()  # history: tombstones, never the text
    await expect(mod.messages("team")).to_have_text(["message deleted", "message deleted"])
    await expect(mod.page.get_by_text("hello world")).to_have_count(0)
