"""Who is in which room: counted per user, across every process when a shared store is set.

`LocalPresence` keeps this process's sockets (which sids of which user are in
which room): it is what kicks and presence skipping act on. `Presence` adds
the decision the contract needs across processes: a user's first socket in a
room on any node announces `joined`, the last one anywhere `left`, once each
(contract, "presence ... once per user, not per socket"). With Redis, those
decisions are made atomically in Redis by small Lua scripts over per-node
counts; every node heartbeats into a sorted set, and a node that stops (kill
-9) is reaped by a survivor after NODE_TTL seconds, which announces the users
who left with it, exactly once. Without Redis, one process decides alone.
When Redis does not answer within TIMEOUT seconds a decision falls back to
this process's own view, and the node rewrites its share once Redis is back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import redis.asyncio

from quart_rooms.breaker import Breaker
from quart_rooms.tasks import within

log = logging.getLogger(__name__)

NODE_TTL_MS = 5000  # a node silent this long is reaped
TIMEOUT = 0.5  # seconds a presence call to Redis may take


class LocalPresence:
    """Presence kept in this process's memory: sids by room and user."""

    def __init__(self) -> None:
        self._rooms: dict[str, dict[str, set[str]]] = {}
        self._by_sid: dict[str, set[str]] = {}

    def add(self, room: str, user: str, sid: str) -> bool:
        """Record a socket in a room; True when it is the user's first socket there on this process."""
        users = self._rooms.setdefault(room, {})
        first = user not in users
        users.setdefault(user, set()).add(sid)
        self._by_sid.setdefault(sid, set()).add(room)
        return first

    def remove(self, room: str, user: str, sid: str) -> bool:
        """Forget a socket in a room; True when it was the user's last socket there on this process."""
        users = self._rooms.get(room, {})
        sids = users.get(user)
        if sids is None or sid not in sids:
            return False
        sids.discard(sid)
        self._by_sid.get(sid, set()).discard(room)
        if not self._by_sid.get(sid):
            self._by_sid.pop(sid, None)
        if sids:
            return False
        del users[user]
        if not users:
            del self._rooms[room]
        return True

    def members(self, room: str) -> list[str]:
        """The users with at least one socket in the room here, by name."""
        return sorted(self._rooms.get(room, {}))

    def sids(self, room: str, user: str | None = None) -> list[str]:
        """The sockets in a room here (of one user, if given)."""
        users = self._rooms.get(room, {})
        if user is not None:
            return sorted(users.get(user, ()))
        return [sid for group in users.values() for sid in group]

    def rooms_of(self, sid: str) -> list[str]:
        """The rooms a socket is in."""
        return sorted(self._by_sid.get(sid, ()))

    def has(self, room: str) -> bool:
        """True while any local socket is in the room."""
        return room in self._rooms

    def entries(self) -> list[tuple[str, str, int]]:
        """(room, user, sockets) of every user present here."""
        return [(room, user, len(sids)) for room, users in self._rooms.items() for user, sids in users.items()]


# KEYS: the user's per-node counts, the room's members, this node's index, the nodes, this
# node's sequence. ARGV: node, room, user, ttl (ms), delta (+1 or -1), the change's sequence
# number. Returns 1 when the user's live total went 0 -> 1 (delta +1) or 1 -> 0 (delta -1),
# 0 otherwise, and -1 for a change older than what Redis has of this node (it timed out here
# and reached Redis late, after a rewrite of the node's share: it must not count twice).
_LIVE_TOTAL = """
local function live_total(key, nodes, since)
  local total = 0
  local counts = redis.call('HGETALL', key)
  for i = 1, #counts, 2 do
    local seen = redis.call('ZSCORE', nodes, counts[i])
    if seen and tonumber(seen) >= since then total = total + tonumber(counts[i + 1]) end
  end
  return total
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""
_CHANGE = _LIVE_TOTAL + """
if tonumber(redis.call('GET', KEYS[5]) or '0') >= tonumber(ARGV[6]) then return -1 end
redis.call('SET', KEYS[5], ARGV[6])
local since = now_ms() - tonumber(ARGV[4])
local before = live_total(KEYS[1], KEYS[4], since)
local count = redis.call('HINCRBY', KEYS[1], ARGV[1], tonumber(ARGV[5]))
local entry = ARGV[2] .. '\\n' .. ARGV[3]
if count <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('SREM', KEYS[3], entry)
else
  redis.call('SADD', KEYS[3], entry)
end
local after = live_total(KEYS[1], KEYS[4], since)
if after > 0 then redis.call('SADD', KEYS[2], ARGV[3]) else redis.call('SREM', KEYS[2], ARGV[3]) end
if (before == 0 and after > 0) or (before > 0 and after == 0) then return 1 end
return 0
"""
# KEYS: the room's members, the nodes. ARGV: key prefix, room, ttl (ms). Returns the live users.
_MEMBERS = _LIVE_TOTAL + """
local since = now_ms() - tonumber(ARGV[3])
local live = {}
for _, user in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if live_total(ARGV[1] .. ARGV[2] .. '\\n' .. user, KEYS[2], since) > 0 then table.insert(live, user) end
end
return live
"""
# KEYS: the nodes. ARGV: node. Records a heartbeat in Redis time; 0 when the node was
# not known (new, or reaped while it could not reach Redis), else 1.
_BEAT = _LIVE_TOTAL + """
local known = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now_ms(), ARGV[1])
if known then return 1 end
return 0
"""
# KEYS: the nodes. ARGV: key prefix, ttl (ms). Reaps every node silent for ttl; returns
# room, user pairs (flattened) whose last live socket was on a reaped node.
_REAP = _LIVE_TOTAL + """
local since = now_ms() - tonumber(ARGV[2])
local gone = {}
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. since)) do
  local index = ARGV[1] .. 'node\\n' .. node
  for _, entry in ipairs(redis.call('SMEMBERS', index)) do
    local cut = string.find(entry, '\\n', 1, true)
    local room, user = string.sub(entry, 1, cut - 1), string.sub(entry, cut + 1)
    local key = ARGV[1] .. room .. '\\n' .. user
    redis.call('HDEL', key, node)
    if live_total(key, KEYS[1], since) == 0 then
      redis.call('SREM', ARGV[1] .. 'room\\n' .. room, user)
      table.insert(gone, room)
      table.insert(gone, user)
    end
  end
  redis.call('DEL', index)
  redis.call('DEL', ARGV[1] .. 'seq\\n' .. node)
  redis.call('ZREM', KEYS[1], node)
end
return gone
"""
# KEYS: this node's index, the nodes, this node's sequence. ARGV: key prefix, node, sequence,
# then room, user, count triples. Replaces this node's share by the given one (after an
# outage or being reaped); changes numbered up to `sequence` are in it.
_RESYNC = _LIVE_TOTAL + """
redis.call('SET', KEYS[3], ARGV[3])
for _, entry in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local cut = string.find(entry, '\\n', 1, true)
  redis.call('HDEL', ARGV[1] .. string.sub(entry, 1, cut - 1) .. '\\n' .. string.sub(entry, cut + 1), ARGV[2])
end
redis.call('DEL', KEYS[1])
redis.call('ZADD', KEYS[2], now_ms(), ARGV[2])
for i = 4, #ARGV, 3 do
  local room, user = ARGV[i], ARGV[i + 1]
  redis.call('HSET', ARGV[1] .. room .. '\\n' .. user, ARGV[2], ARGV[i + 2])
  redis.call('SADD', ARGV[1] .. 'room\\n' .. room, user)
  redis.call('SADD', KEYS[1], room .. '\\n' .. user)
end
return 1
"""


class SharedPresence:
    """Per-node socket counts in Redis, with node liveness (see the module docstring)."""

    def __init__(self, url: str, prefix: str, node: str) -> None:
        self._redis = redis.asyncio.Redis.from_url(url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)
        self.node = node
        self._prefix = f"{prefix}:presence\n"
        self._nodes = f"{prefix}:presence:nodes"
        self._change = self._redis.register_script(_CHANGE)
        self._members = self._redis.register_script(_MEMBERS)
        self._beat = self._redis.register_script(_BEAT)
        self._reap = self._redis.register_script(_REAP)
        self._resync = self._redis.register_script(_RESYNC)

    def _user_key(self, room: str, user: str) -> str:
        return f"{self._prefix}{room}\n{user}"

    def _room_key(self, room: str) -> str:
        return f"{self._prefix}room\n{room}"

    def _node_key(self) -> str:
        return f"{self._prefix}node\n{self.node}"

    def _seq_key(self) -> str:
        return f"{self._prefix}seq\n{self.node}"

    async def change(self, room: str, user: str, delta: int, seq: int) -> bool:
        """Count a user's socket in or out of a room (change number `seq` of this node); True when
        the user's live total crossed zero."""
        keys = [self._user_key(room, user), self._room_key(room), self._node_key(), self._nodes, self._seq_key()]
        args: list[str | int] = [self.node, room, user, NODE_TTL_MS, delta, seq]
        return int(await within(TIMEOUT, self._change(keys=keys, args=args))) == 1

    async def members(self, room: str) -> list[str]:
        """The users with a live socket in the room on any node."""
        found = await within(
            TIMEOUT, self._members(keys=[self._room_key(room), self._nodes], args=[self._prefix, room, NODE_TTL_MS])
        )
        return sorted(item.decode() if isinstance(item, bytes) else str(item) for item in found)

    async def beat(self) -> bool:
        """Record that this node is alive; False when Redis did not know it (its share may be gone)."""
        return bool(await within(TIMEOUT, self._beat(keys=[self._nodes], args=[self.node])))

    async def reap(self) -> list[tuple[str, str]]:
        """Drop the share of nodes silent for NODE_TTL_MS; the (room, user) pairs that left with them."""
        flat = await within(TIMEOUT, self._reap(keys=[self._nodes], args=[self._prefix, NODE_TTL_MS]))
        names = [item.decode() if isinstance(item, bytes) else str(item) for item in flat]
        return list(zip(names[0::2], names[1::2], strict=True))

    async def resync(self, entries: list[tuple[str, str, int]], seq: int) -> None:
        """Replace this node's share by `entries` (room, user, sockets), which hold changes up to `seq`."""
        args: list[str | int] = [self._prefix, self.node, seq]
        for room, user, count in entries:
            args += [room, user, count]
        await within(TIMEOUT, self._resync(keys=[self._node_key(), self._nodes, self._seq_key()], args=args))

    async def close(self) -> None:
        """Close the connections."""
        await self._redis.aclose()


class Presence:
    """Room membership per user: this process's sockets, and the decisions across processes."""

    def __init__(self, shared: SharedPresence | None = None) -> None:
        self.local = LocalPresence()
        self.shared = shared
        self.dirty = False  # Redis missed a change: rewrite this node's share when it answers
        # Local changes and their shared ones are made one at a time, in order: a socket's +1 and
        # its -1 on two connections could otherwise reach Redis the other way round, and a rewrite
        # of this node's share must not see a local change whose shared one is still to come.
        self._order = asyncio.Lock()
        self._breaker = Breaker(log, "deciding from this node alone")
        self._seq = 0  # number of this node's latest change (Redis ignores older ones)
        # Called with (room, user) pairs that left with a dead node: announce `left` for them.
        self.on_reaped: Callable[[list[tuple[str, str]]], None] = lambda pairs: None
        self._task: asyncio.Task[None] | None = None

    async def enter(self, room: str, user: str, sid: str) -> bool:
        """Put a socket in a room; True when the user was in it nowhere before (announce `joined`)."""
        async with self._order:  # the local change and its shared one together (see _keep_alive)
            if not self.local.add(room, user, sid):
                return False
            return await self._shared_change(room, user, +1)

    async def leave(self, room: str, user: str, sid: str) -> bool:
        """Take a socket out of a room; True when the user is in it nowhere now (announce `left`)."""
        async with self._order:
            if not self.local.remove(room, user, sid):
                return False
            return await self._shared_change(room, user, -1)

    def _usable(self) -> bool:
        return self.shared is not None and self._breaker.usable

    def _failed(self, exc: Exception) -> None:
        self._breaker.failed(exc)
        self.dirty = True

    async def _shared_change(self, room: str, user: str, delta: int) -> bool:
        """Apply a local change to Redis (the caller holds _order); whether the user's total crossed zero."""
        if self.shared is None:
            return True
        if not self._usable():
            self.dirty = True
            return True
        self._seq += 1
        try:
            return await self.shared.change(room, user, delta, self._seq)
        except Exception as exc:
            self._failed(exc)
            return True

    async def members(self, room: str) -> list[str]:
        """The users in the room on any node (this node's alone when Redis does not answer)."""
        if self.shared is not None and self._usable():
            try:
                return await self.shared.members(room)
            except Exception as exc:
                self._failed(exc)
        return self.local.members(room)

    def start(self) -> None:
        """Start heartbeating and reaping (with a shared store)."""
        if self.shared is not None:
            self._task = asyncio.get_running_loop().create_task(self._keep_alive(), name="presence")

    async def stop(self) -> None:
        """Stop heartbeating; this node's share expires (or is reaped) after NODE_TTL_MS."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.shared is not None:
            try:
                self._seq += 1
                await self.shared.resync([], self._seq)  # leave nothing behind on a clean stop
            except Exception:
                pass
            await self.shared.close()

    async def _keep_alive(self) -> None:
        assert self.shared is not None
        while True:
            try:
                known = await self.shared.beat()  # no lock: a heartbeat changes no counts
                if self.dirty or not known:
                    async with self._order:  # no change slips between the snapshot and the rewrite
                        self._seq += 1
                        await self.shared.resync(self.local.entries(), self._seq)
                        self.dirty = False
                        self._breaker.reset()
                gone = await self.shared.reap()
                if gone:
                    self.on_reaped(gone)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(exc)
            await asyncio.sleep(1.0)
