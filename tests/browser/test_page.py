"""The page in a real browser against the real server: what a user sees and does."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from playwright.async_api import Route, expect

from tests.browser.conftest import ADMIN_PASSWORD, LiveServer, Tab, save_screenshot
from tests.helpers import Api, Chatter

XSS = "<img src=x onerror=alert(1)>"


async def visible_controls_without_label(tab: Tab) -> list[str]:
    """Visible form controls and buttons that have no accessible name."""
    return list(await tab.page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea, button')]
            .filter((el) => el.offsetParent !== null)
            .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                            && !(el.tagName === 'BUTTON' && el.textContent.trim()))
            .map((el) => el.outerHTML)"""
    ))


@pytest.mark.parametrize("server_settings", [{"login_failures_per_account": 2}])
async def test_sign_in_failure_rate_limit_and_success(open_tab: Any, admin: Api) -> None:
    await admin.create_user("alice")
    tab = await open_tab()
    page = tab.page
    form = page.get_by_role("region", name="Sign in")
    await expect(form.get_by_role("heading", name="Sign in")).to_be_visible()

    await form.get_by_label("Username").fill("alice")
    await form.get_by_label("Password").fill("not-the-password")
    await form.get_by_label("Password").press("Enter")
    await expect(page.locator("#signin-error")).to_have_text("Wrong username or password.")
    await expect(page.locator("#chat-view")).to_be_hidden()

    await tab.sign_in("alice")
    await expect(form).to_be_hidden()
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.locator("#signin-note")).to_have_text("You have signed out.")

    await form.get_by_label("Username").fill("alice")
    for wrong in ("wrong-again", "wrong-thrice"):  # a success cleared the earlier failure
        await form.get_by_label("Password").fill(wrong)
        await form.get_by_role("button", name="Sign in").click()
        await expect(page.locator("#signin-error")).to_have_text("Wrong username or password.")
        await page.locator("#signin-error").evaluate("(node) => { node.textContent = ''; }")
    await form.get_by_label("Password").fill("password-123")
    await form.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#signin-error")).to_contain_text("Too many failed sign-ins. Wait")
    await expect(page.locator("#chat-view")).to_be_hidden()


async def test_only_permitted_rooms_are_listed_and_read_only_has_no_send_box(open_tab: Any, admin: Api) -> None:
    await admin.create_user("alice")
    await admin.create_room("lobby", public=True, title="Everyone")
    await admin.create_room("secret", title="Read-only news")
    await admin.create_room("staff")
    await admin.grant("secret", "alice", "read")
    tab = await open_tab()
    await tab.sign_in("alice")
    page = tab.page

    await expect(page.locator("#room-list .room-name")).to_have_text(["lobby", "secret"])
    await expect(tab.room_button("secret")).to_contain_text("read only")
    await expect(page.get_by_text("staff")).to_have_count(0)

    await tab.room_button("secret").focus()  # the keyboard alone is enough
    await page.keyboard.press("Enter")
    await expect(page.locator("#room-heading")).to_have_text("Read-only news")
    await expect(page.locator("#read-only-note")).to_have_text("You may read this room but not write in it.")
    await expect(page.get_by_role("textbox", name="Message")).to_be_hidden()

    await tab.open_room("lobby")
    await expect(page.get_by_role("textbox", name="Message")).to_be_visible()
    await expect(page.locator("#read-only-note")).to_be_hidden()
    assert await visible_controls_without_label(tab) == []


async def test_two_users_chat_in_a_room_and_a_third_elsewhere_sees_nothing(open_tab: Any, admin: Api) -> None:
    for name in ("alice", "bob", "carol", "dave"):
        await admin.create_user(name)
    await admin.create_room("team", title="Team room")
    await admin.create_room("other")
    await admin.create_room("lobby", public=True, title="Everyone")
    await admin.grant("team", "alice")
    await admin.grant("team", "bob")
    await admin.grant("team", "dave", "read")  # never signs in: listed as offline
    await admin.grant("other", "carol")
    alice, bob, carol = await open_tab(), await open_tab(), await open_tab()
    for tab, name in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
        await tab.sign_in(name)
    await carol.open_room("other")
    await alice.open_room("team")
    await bob.open_room("team")
    await bob.open_room("lobby")  # bob is in two rooms and looks at lobby

    await expect(alice.page.locator("#member-list .member-name")).to_have_text(["alice", "bob", "dave"])
    await expect(alice.page.locator("#member-list .member-state")).to_have_text(["online", "online", "offline"])
    await expect(alice.log("team").locator("li.system")).to_have_text(["bob joined"])
    await alice.say("hello bob")
    await expect(bob.room_button("team").locator(".unread")).to_have_text("1 unread")
    await bob.room_button("team").click()
    await expect(bob.room_button("team").locator(".unread")).to_be_hidden()
    await expect(bob.messages("team")).to_have_text(["hello bob"])
    await expect(bob.log("team").locator("li.msg .who")).to_have_text(["alice"])
    await expect(bob.log("team").locator("li.msg time")).to_have_count(1)
    await bob.say("hi alice\nhow are you?")
    await expect(alice.messages("team")).to_have_text(["hello bob", "hi alice\nhow are you?"])
    await expect(alice.log("team").locator("li.msg .who")).to_have_text(["alice", "bob"])

    await carol.say("anyone here?")
    await expect(carol.messages("other")).to_have_text(["anyone here?"])
    await expect(carol.page.get_by_text("hello bob")).to_have_count(0)
    await expect(carol.page.get_by_text("how are you")).to_have_count(0)
    await expect(carol.room_button("team")).to_have_count(0)
    await expect(alice.page.get_by_text("anyone here?")).to_have_count(0)

    await alice.page.get_by_role("textbox", name="Message").fill("Typing the next message…")
    await alice.page.screenshot(path=save_screenshot("chat.png"))


async def test_markup_in_messages_and_titles_shows_as_text(open_tab: Any, admin: Api) -> None:
    await admin.create_user("alice")
    await admin.create_user("bob")
    await admin.create_room("lobby", public=True, title="<b>bold</b><img src=y onerror=alert(2)>")
    alice, bob = await open_tab(), await open_tab()
    await alice.sign_in("alice")
    await bob.sign_in("bob")
    await alice.open_room("lobby")
    await bob.open_room("lobby")

    await alice.say(XSS)
    await expect(bob.messages("lobby")).to_have_text([XSS])
    await expect(alice.messages("lobby")).to_have_text([XSS])
    await expect(bob.room_button("lobby").locator(".room-title")).to_have_text("<b>bold</b><img src=y onerror=alert(2)>")
    await expect(bob.page.locator("#room-heading")).to_have_text("<b>bold</b><img src=y onerror=alert(2)>")
    await asyncio.sleep(0.3)  # an injected image would have failed to load by now
    for tab in (alice, bob):
        await expect(tab.page.locator("main img, main b")).to_have_count(0)
        assert tab.dialogs == []


async def test_admin_revokes_a_user_who_sees_the_kick_at_once(open_tab: Any, admin: Api) -> None:
    await admin.create_user("bob")
    await admin.create_user("carol")
    await admin.create_room("team", title="Team room")
    await admin.create_room("lobby", public=True, title="Everyone")
    await admin.grant("team", "bob")
    await admin.grant("team", "carol", "read")
    bob = await open_tab()
    await bob.sign_in("bob")
    await bob.open_room("team")
    await bob.say("am I still here?")

    boss = await open_tab()
    await boss.sign_in("admin", ADMIN_PASSWORD)
    page = boss.page
    await page.get_by_role("button", name="Admin", exact=True).click()
    await expect(page.locator("#users-body tr")).to_have_count(3)

    users = page.get_by_role("region", name="Users")
    await users.get_by_label("Username").fill("dave")
    await users.get_by_label("Password", exact=True).fill("dave-password-1")
    await users.get_by_role("button", name="Create user").click()
    await expect(page.locator("#users-status")).to_have_text("User dave was created.")
    await expect(page.locator('#users-body tr[data-user="dave"]')).to_contain_text("Active")
    own = page.locator('#users-body tr[data-user="admin"]')  # the server refuses both for oneself
    await expect(own).to_contain_text("admin (you)")
    await expect(own.get_by_role("button", name="Disable")).to_have_count(0)
    await expect(own.get_by_role("button", name="Delete user")).to_have_count(0)

    grants = page.get_by_role("region", name="Grants")
    await grants.get_by_label("Room", exact=True).select_option("team")
    await expect(page.locator("#grants-body tr")).to_have_count(2)
    await expect(grants.get_by_label("Role", exact=True).locator("option")).to_have_count(3)  # write, read, moderate
    await grants.get_by_label("Username").fill("dave")
    await grants.get_by_label("Role", exact=True).select_option("read")
    await grants.get_by_role("button", name="Grant", exact=True).click()
    await expect(page.locator("#grants-body tr")).to_have_count(3)

    await grants.get_by_role("button", name="Revoke bob from team").click()
    await expect(page.locator("#grants-status")).to_have_text("bob no longer has access to team.")
    await expect(bob.page.locator("#notices")).to_contain_text("You no longer have access to room team")
    await expect(bob.page.locator("#room-placeholder")).to_contain_text("You no longer have access to room team")
    await expect(bob.room_button("team")).to_have_count(0)
    await expect(bob.page.locator("#room-list .room-name")).to_have_text(["lobby"])
    await expect(bob.page.get_by_role("textbox", name="Message")).to_be_hidden()

    await expect(page.locator("#grants-body tr")).to_have_count(2)
    await expect(page.locator("#audit-body tr").first).to_contain_text("grant.delete")

    await page.get_by_role("button", name="Make room lobby private").click()
    await expect(page.locator("#rooms-status")).to_have_text("Room lobby is now private.")
    await expect(page.locator('#admin-rooms-body tr[data-room="lobby"]')).to_contain_text("Private")

    await page.get_by_role("button", name="Disable bob").click()
    await expect(page.locator('#users-body tr[data-user="bob"]')).to_contain_text("Disabled")
    await expect(bob.page.locator("#signin-note")).to_have_text(
        "An admin disabled your account or set a new password. Please sign in again.")
    await expect(bob.page.locator("#chat-view")).to_be_hidden()

    await page.get_by_role("button", name="Delete user dave").click()  # two steps, said in the status line
    await expect(page.locator("#users-status")).to_contain_text('Press "Confirm delete" to delete dave.')
    await expect(page.locator('#users-body tr[data-user="dave"]')).to_have_count(1)
    await page.get_by_role("button", name="Confirm: delete user dave").click()
    await expect(page.locator("#users-status")).to_have_text("User dave was deleted.")
    await expect(page.locator('#users-body tr[data-user="dave"]')).to_have_count(0)
    await expect(page.locator("#grants-body tr")).to_have_count(1)
    assert await visible_controls_without_label(boss) == []
    await page.screenshot(path=save_screenshot("admin.png"), full_page=True)


@pytest.mark.parametrize("server_settings", [{"max_recovery": 2}])  # the rest of the recovery comes over HTTP
async def test_restart_recovers_messages_sent_meanwhile_each_once(open_tab: Any, admin: Api, live: LiveServer) -> None:
    await admin.create_user("alice")
    await admin.create_user("bob")
    await admin.create_room("team")
    await admin.grant("team", "alice")
    await admin.grant("team", "bob")
    alice = await open_tab()
    await alice.sign_in("alice")
    await alice.open_room("team")
    await alice.say("before the restart")
    page = alice.page

    gate = asyncio.Event()  # holds the page's cookie refresh, so it reconnects only after bob has talked

    async def hold(route: Route) -> None:
        await gate.wait()
        await route.continue_()

    await page.route("**/api/auth/refresh", hold)
    await live.stop()
    await expect(page.locator("#conn")).to_have_attribute("data-state", "reconnecting")
    await expect(page.locator("#conn")).to_contain_text("reconnecting")
    await live.start()

    bob = Chatter(live.url)
    try:
        await bob.connect(await admin.token_for("bob"))
        assert (await bob.call("join", {"room": "team"}))["ok"]
        for text in ("sent while away 1", "sent while away 2", "sent while away 3"):
            assert (await bob.call("message", {"room": "team", "msg": text}))["ok"]
        gate.set()
        await expect(page.locator("#conn")).to_have_text("Connected", timeout=15000)
        await expect(alice.messages("team")).to_have_text(
            ["before the restart", "sent while away 1", "sent while away 2", "sent while away 3"])
        await expect(alice.log("team").locator("li.system").last).to_have_text("Reconnected; 3 new messages since.")

        assert (await bob.call("message", {"room": "team", "msg": "live again"}))["ok"]
        await alice.say("welcome back")
        await expect(alice.messages("team")).to_have_text(["before the restart", "sent while away 1",
                                                           "sent while away 2", "sent while away 3", "live again", "welcome back"])
        await bob.wait_for("message", 5)
        await bob.settle(0.3)
        assert [m["msg"] for m in bob.events["message"]] == [
            "sent while away 1", "sent while away 2", "sent while away 3", "live again", "welcome back"]
    finally:
        await bob.close()
        await page.unroute("**/api/auth/refresh")


async def test_reload_keeps_the_user_signed_in_on_a_phone(open_tab: Any, admin: Api) -> None:
    await admin.create_user("alice")
    await admin.create_room("lobby", public=True, title="Everyone")
    await admin.create_room("news", public=True, title="Announcements")
    tab = await open_tab(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = tab.page
    await tab.sign_in("alice")
    await tab.open_room("lobby")
    await tab.say("still here after a reload")
    await tab.say("the notes are at https://example.com/notes")

    await page.reload()
    await expect(page.locator("#whoami")).to_have_text("alice")
    await expect(page.locator("#conn")).to_have_text("Connected")
    await expect(page.get_by_role("region", name="Sign in")).to_be_hidden()
    await expect(tab.messages("lobby")).to_have_text(  # the open room is rejoined
        ["still here after a reload", "the notes are at https://example.com/notes"])

    assert "quart_rooms_refresh" not in await page.evaluate("document.cookie")
    cookie = next(c for c in await tab.context.cookies() if c["name"] == "quart_rooms_refresh")
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/api/auth")
    assert await page.evaluate("JSON.stringify(localStorage).length + Object.keys(sessionStorage).join()") == "2quart-rooms.rooms"
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    await expect(page.get_by_role("textbox", name="Message")).to_be_in_viewport()
    bars = await page.evaluate("""() => Object.fromEntries(['.topbar', '.rooms', '.room-head', '#members', '#composer']
        .map((s) => [s, document.querySelector(s).getBoundingClientRect().height]))""")
    assert bars[".topbar"] <= 48 and bars["#composer"] <= 64, bars  # one row each
    assert sum(bars.values()) <= 0.3 * 844, bars  # the messages keep at least 70% of the height
    await page.screenshot(path=save_screenshot("phone.png"))

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.locator("#signin-note")).to_have_text("You have signed out.")
    await page.reload()
    await expect(page.get_by_role("region", name="Sign in")).to_be_visible()
    await expect(page.locator("#chat-view")).to_be_hidden()


@pytest.mark.parametrize("server_settings", [{"max_message_chars": 20, "messages_per_10s": 2}])
async def test_a_failed_send_keeps_the_text_and_says_why(open_tab: Any, admin: Api) -> None:
    await admin.create_user("alice")
    await admin.create_room("lobby", public=True)
    tab = await open_tab()
    await tab.sign_in("alice")
    await tab.open_room("lobby")
    page = tab.page
    box = page.get_by_role("textbox", name="Message")

    await box.fill("sixteen chars ok")
    await expect(page.locator("#composer-count")).to_have_text("16 / 20 characters")
    await box.fill("this is far too long for the limit")
    await expect(page.locator("#composer-count")).to_have_text("34 / 20 characters: 14 too many")
    await box.press("Enter")
    await expect(page.locator("#send-error")).to_have_text("Too long: a message may have at most 20 characters.")
    await expect(box).to_have_value("this is far too long for the limit")

    await tab.say("one")
    await expect(page.locator("#send-error")).to_have_text("")
    await tab.say("two")
    await box.fill("three")
    await page.get_by_role("button", name="Send").click()
    await expect(page.locator("#send-error")).to_contain_text("You are sending too fast")
    await expect(box).to_have_value("three")
    await expect(tab.messages("lobby")).to_have_text(["one", "two"])


@pytest.mark.parametrize("server_settings", [{"messages_per_10s": 1000}])
async def test_scrolling_up_loads_older_messages(open_tab: Any, admin: Api, live: LiveServer) -> None:
    await admin.create_user("alice")
    await admin.create_user("bob")
    await admin.create_room("lobby", public=True)
    bob = Chatter(live.url)
    try:
        await bob.connect(await admin.token_for("bob"))
        assert (await bob.call("join", {"room": "lobby"}))["ok"]
        for n in range(1, 76):
            assert (await bob.call("message", {"room": "lobby", "msg": f"message {n}"}))["ok"]
    finally:
        await bob.close()
    tab = await open_tab()
    await tab.sign_in("alice")
    await tab.open_room("lobby")
    texts = tab.messages("lobby")
    await expect(texts).to_have_count(50)
    await expect(texts.first).to_have_text("message 26")
    await expect(texts.last).to_be_in_viewport()

    await tab.log("lobby").evaluate("log => { log.scrollTop = 0; }")
    await expect(texts).to_have_count(75)
    await expect(tab.log("lobby").get_by_text("This is the start of the room.")).to_be_visible()
    assert await texts.all_text_contents() == [f"message {n}" for n in range(1, 76)]
    await expect(texts.nth(25)).to_be_in_viewport()  # the reader stays where they were


@pytest.mark.parametrize("server_settings", [{"access_token_ttl": 4}])
async def test_the_page_renews_its_token_and_says_when_it_cannot(open_tab: Any, admin: Api) -> None:
    await admin.create_user("alice")
    await admin.create_room("lobby", public=True)
    tab = await open_tab()
    page = tab.page
    sockets: list[Any] = []
    page.on("websocket", lambda ws: sockets.append(ws))
    await tab.sign_in("alice")
    await tab.open_room("lobby")

    await asyncio.sleep(5)  # longer than an access token lives
    await tab.say("still connected")
    await expect(tab.messages("lobby")).to_have_text(["still connected"])
    await expect(page.locator("#conn")).to_have_text("Connected")
    await expect(page.locator("#notices")).to_be_empty()
    assert len(sockets) == 1  # the same connection all along: renewed, not expired and reopened

    await page.route("**/api/auth/refresh", lambda route: route.fulfill(
        status=401, json={"error": {"code": "unauthorized", "message": "The refresh token is not valid."}}))
    await expect(page.locator("#signin-note")).to_have_text("Your session has ended. Please sign in again.")
    await expect(page.locator("#chat-view")).to_be_hidden()
