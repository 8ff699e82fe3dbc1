"""The Redis sink's owner marker: a key beside the destination naming the bridge that writes
it, so that a second bridge pointed at the same stream, channel or mirror by mistake is
refused with a line naming the first (``bridge.ownership``) instead of interleaving with it.

The key is ``<destination>:owner`` (the stream's name or routing template, the channel, the
mirror hash) and holds ``Owner.marker``: pipeline, host, pid and which process that is.

Why an expiring key, and why these times. Redis has no lock that dies with its holder's
connection, so the marker expires ``TTL_SECONDS`` after it was last renewed; a thread renews
it every ``RENEW_SECONDS`` while the sink is open, idle or not, and ``close`` deletes it. A
restart must not stall on a marker its crashed predecessor left:

- on the same machine the predecessor is provably gone (its process no longer runs), and its
  marker is replaced at once;
- with HA the new leader takes over from any instance of its pipeline at once: the chaos
  suite's ten ``kill -9`` a run never wait;
- only a restart of the same pipeline elsewhere (another container, a rescheduled pod) waits
  for the marker to lapse, at most ``TTL_SECONDS``, reporting the sink unavailable meanwhile
  (retried by the pump); a marker still there after that was renewed, so its holder runs, and
  the newcomer is refused.

Ten seconds is five renewals: a renewal delayed by a slow Redis does not lose the marker,
and a restart elsewhere waits about as long as a pod takes to be rescheduled anyway.

Every write script checks the marker atomically with its writes (``sinks.redis.lua``): a
marker of another bridge refuses the batch (``OWNED``), so a bridge whose marker lapsed while
it was paused, and was taken meanwhile, stops instead of interleaving. An absent marker is no
obstacle (the renewal sets it again). Under HA the scripts let markers of their own pipeline
through: the election fences its instances.

A user whose ACL does not cover the key (rules written before the marker existed) keeps no
marker: the sink warns once at open and writes as before (docs/redis.md has the rules). The
scripts that claim, renew and release are flagged ``allow-oom``: a Redis at ``maxmemory``
refuses the sink's writes, and it must not lose the marker for that.
"""

import logging
import threading

import redis
import redis.exceptions

from bridge.errors import SinkRejectedError, SinkUnavailableError
from bridge.ownership import Claim, Claimant, Owner
from sinks.redis.client import Arguments, Script, as_bytes, connect, destination_of
from sinks.redis.settings import RedisMode, RedisSettings

log = logging.getLogger(__name__)

TTL_SECONDS = 10.0
"""How long a marker lives unless renewed."""
RENEW_SECONDS = 2.0
"""How often the sink renews its marker while open."""

_CLAIM = Script.of(
    """#!lua flags=allow-oom
-- KEYS[1] the marker; ARGV[1] this sink's claim, ARGV[2] its TTL in milliseconds, ARGV[3]
-- (optional) a claim it may replace. Claims an absent marker, renews its own.
-- Returns {1} when the marker is this sink's now, {0, held, its TTL in milliseconds or -1}
-- when another claim holds it, {-1} when the user may not read and write the key.
local marker = KEYS[1]
if not (redis.acl_check_cmd('GET', marker) and redis.acl_check_cmd('PTTL', marker) and
    redis.acl_check_cmd('SET', marker, 'v', 'PX', '1')) then
  return {-1}
end
local held = redis.call('GET', marker)
if held == false or held == ARGV[1] or (#ARGV > 2 and held == ARGV[3]) then
  redis.call('SET', marker, ARGV[1], 'PX', ARGV[2])
  return {1}
end
return {0, held, redis.call('PTTL', marker)}
"""
)

_RELEASE = Script.of(
    """#!lua flags=allow-oom
-- KEYS[1] the marker; ARGV[1] this sink's claim: deleted if it still holds it.
if redis.acl_check_cmd('DEL', KEYS[1]) and redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
)

_DESTINATION_SETTING = {
    RedisMode.STREAM: "BRIDGE_REDIS__STREAM",
    RedisMode.PUBSUB: "BRIDGE_REDIS__CHANNEL",
    RedisMode.MIRROR: "BRIDGE_REDIS__MIRROR_KEY",
}


def _destination(own: RedisSettings) -> str:
    """The destination in words, for messages."""
    if own.mode is RedisMode.PUBSUB:
        return f"channel {own.channel!r}"
    if own.mode is RedisMode.MIRROR:
        return f"mirror hash {own.mirror_key!r}"
    return f"streams {own.stream!r}" if own.template.routed else f"stream {own.stream!r}"


def owner_key(own: RedisSettings) -> str:
    """The marker of the destination ``own`` names: ``<destination>:owner``."""
    return f"{destination_of(own)}:owner"


class OwnerMarker:
    """One sink's claim on its destination: taken by ``claim`` at open, renewed by a thread
    while open, checked by every write script (``script_keys``, ``script_args``), deleted
    by ``release``. One per sink object, kept across its reopenings."""

    def __init__(self, *, settings: RedisSettings, claimant: Claimant) -> None:
        self._settings = settings
        self.key = owner_key(settings)
        self._claimant = claimant
        self._claim = claimant.owner.marker
        self._destination = _destination(settings)
        self.kept = False
        """Whether the marker is this sink's (False before ``claim`` and where the ACL
        forbids the key)."""
        self._warned = False
        self._stop: threading.Event | None = None

    @property
    def _ttl_ms(self) -> int:
        return int(TTL_SECONDS * 1000)

    def claim(self, client: "redis.Redis") -> None:
        """Make the marker this sink's, or raise: SinkRejectedError naming the bridge that
        holds it, SinkUnavailableError while waiting for a claim that may be stale
        (``bridge.ownership``). redis-py's errors go through to the caller's translation."""
        self.stop_renewing()
        self.kept = False
        try:
            reply = _CLAIM.run(client, [self.key], Arguments(self._claim, self._ttl_ms))
        except redis.exceptions.NoPermissionError:  # the key is outside the user's patterns
            reply = [-1]
        if int(reply[0]) == -1:
            if not self._warned:
                self._warned = True
                log.warning(
                    "redis: the user may not read and write the owner key; a second bridge "
                    "writing the same destination will not be refused (docs/redis.md, ACL)",
                    extra={"key": self.key, "user": self._settings.user},
                )
            return
        if int(reply[0]) == 0:
            held, ttl = as_bytes(reply[1]), int(reply[2])
            self._contest(client, held, lapses_in=None if ttl < 0 else ttl / 1000)
        self.kept = True
        self._start_renewing()

    def _contest(self, client: "redis.Redis", held: bytes, *, lapses_in: float | None) -> None:
        """Take the marker from ``held`` where ``bridge.ownership`` says so, or raise."""
        holder = Owner.decode(held)
        verdict = self._claimant.judge(holder, lapses_in=lapses_in)
        if verdict is Claim.WAIT:
            raise SinkUnavailableError(
                f"redis: the owner key {self.key!r} of {self._destination} names {holder}, "
                "which ran on another machine and may be gone; waiting up to "
                f"{self._claimant.remaining():.0f}s for it to lapse"
            )
        if verdict is Claim.REFUSE:
            raise self.refusal(held)
        if verdict is Claim.TAKE_OVER:
            log.warning(
                "redis: taking over from another instance of this pipeline",
                extra={"key": self.key, "holder": str(holder)},
            )
        reply = _CLAIM.run(client, [self.key], Arguments(self._claim, self._ttl_ms, held))
        if int(reply[0]) != 1:
            raise SinkUnavailableError(
                f"redis: another bridge claimed {self._destination} meanwhile (key "
                f"{self.key!r}); trying again"
            )

    def refusal(self, held: bytes) -> SinkRejectedError:
        """The one line of a destination that ``held`` claims."""
        holder = Owner.decode(held)
        who = str(holder) if holder else f"unknown: key {self.key!r} holds {held[:80]!r}"
        setting = _DESTINATION_SETTING[self._settings.mode]
        return SinkRejectedError(
            f"redis: another bridge writes {self._destination} ({who}); one destination "
            f"takes one writer: stop that one, or set {setting} to another one (instances of "
            "one pipeline share one only with BRIDGE_HA__ENABLED)"
        )

    def script_keys(self) -> list[bytes | str]:
        """The marker, last of a write script's keys, where the sink keeps one."""
        return [self.key] if self.kept else []

    def script_args(self) -> tuple[bytes | str, str]:
        """A write script's marker arguments: this sink's claim ('' without a marker), and
        the pipeline whose claims it writes beside ('' unless HA)."""
        fellow = self._claimant.owner.pipeline if self._claimant.ha else ""
        return (self._claim if self.kept else b""), fellow

    def release(self, client: "redis.Redis") -> None:
        """Stop renewing and delete the marker if it is still this sink's; a failure leaves
        it to lapse."""
        self.stop_renewing()
        if not self.kept:
            return
        self.kept = False
        try:
            _RELEASE.run(client, [self.key], Arguments(self._claim))
        except redis.exceptions.RedisError as error:
            log.debug("redis: owner key not released", extra={"detail": str(error)})

    def _start_renewing(self) -> None:
        stop = self._stop = threading.Event()
        threading.Thread(target=self._renew, args=(stop,), name="redis-owner", daemon=True).start()

    def stop_renewing(self) -> None:
        """End the renewing thread; it does not wait for a call in flight (a slow Redis),
        which ends with the client's timeout."""
        if self._stop is not None:
            self._stop.set()
            self._stop = None

    def _renew(self, stop: threading.Event) -> None:
        """Every ``RENEW_SECONDS`` until ``stop``: renew the marker, or claim it again if it
        lapsed (a Redis paused for longer than the TTL). A marker another bridge took is left
        alone: the next write script refuses."""
        client = connect(self._settings)
        try:
            while not stop.wait(RENEW_SECONDS):
                try:
                    _CLAIM.run(client, [self.key], Arguments(self._claim, self._ttl_ms))
                except redis.exceptions.RedisError as error:  # down or slow: next turn
                    log.debug("redis: owner key not renewed", extra={"detail": str(error)})
        finally:
            client.close()
