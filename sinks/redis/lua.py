"""The Lua scripts of the Redis sink: one script call writes a batch and its position.

Why scripts: Redis runs a script atomically (no other command interleaves) but rolls nothing
back, so a script that fails half-way keeps its first writes. Each script therefore does all
its checks before its first write:

1. ACL: ``redis.acl_check_cmd`` for every command and key it will touch, so a user lacking a
   permission gets ``NOPERM`` and nothing is written (``open()`` runs the script on an empty
   batch to surface this at start);
2. position: it reads the durable position (the stream's last id, or the checkpoint hash) and
   skips every event at or below it, so a replayed batch is detected and never duplicated;
3. collisions: before adding to a stream it checks the stream's ``last-generated-id`` is below
   what it will add, since an XADD with a smaller id would fail mid-batch;
4. loss: the last two arguments are the position the sink last knew Redis to hold (``-1 -1``
   for none); a durable position behind it means Redis lost what it had acknowledged (a
   restart without persistence, a ``FLUSHALL``, the stream or checkpoint deleted), and the
   script refuses with ``LOST`` instead of writing on after the gap. redis-py reconnects on its
   own to a restarted server, so the sink could not tell otherwise;
5. owner: the two arguments before those are the sink's claim on the destination and, under
   HA, its pipeline (``sinks.redis.owner``); the owner key, when the sink keeps one, is the
   last key. A key held by another bridge (not of the pipeline, under HA) refuses the batch
   with ``OWNED`` and the claim found, so two bridges never interleave.

Every script starts with ``#!lua`` (Redis 7 "shebang" scripts): Redis then refuses the whole
script up front when it is over ``maxmemory`` (OOM), instead of failing at some write in the
middle. Scripts touch only keys they are given in KEYS (ACL key patterns apply to them).

Positions are compared as Lua numbers (doubles), exact for revisions below 2**53.

Every script returns ``{written, skipped}``.
"""

_PRELUDE = """#!lua
local function after(rev, idx, last_rev, last_idx)
  return rev > last_rev or (rev == last_rev and idx > last_idx)
end

local function allowed(key, ...)
  if not redis.acl_check_cmd(...) then
    local command = ...
    error({err = 'NOPERM the user may not run ' .. string.upper(command) ..
      " on key '" .. key .. "'"})
  end
end

-- The stream's last-generated-id (which XADD compares with) as two numbers, or nil.
local function last_id(stream)
  if redis.call('EXISTS', stream) == 0 then
    return nil
  end
  local info = redis.call('XINFO', 'STREAM', stream)
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      local rev, idx = string.match(info[i + 1], '^(%d+)-(%d+)$')
      return tonumber(rev), tonumber(idx)
    end
  end
  return nil
end

-- The events' arguments end before the last four: the sink's claim on the owner key ('' when
-- it keeps none) and the pipeline whose claims it writes beside ('' unless HA), then the
-- position the sink last knew held. The owner key, when kept, is the last key.
local EVENTS_END = #ARGV - 4
local CLAIM, FELLOW = ARGV[#ARGV - 3], ARGV[#ARGV - 2]
local LAST_KEY, OWNER = #KEYS, nil
if CLAIM ~= '' then
  LAST_KEY, OWNER = #KEYS - 1, KEYS[#KEYS]
end

local function owned()
  if OWNER == nil then
    return
  end
  allowed(OWNER, 'GET', OWNER)
  local held = redis.call('GET', OWNER)
  if held and held ~= CLAIM and (FELLOW == '' or string.match(held, '^%S+') ~= FELLOW) then
    error({err = 'OWNED ' .. held})
  end
end

local function not_behind(what, rev, idx)
  local held_rev, held_idx = tonumber(ARGV[#ARGV - 1]), tonumber(ARGV[#ARGV])
  if after(held_rev, held_idx, rev, idx) then
    error({err = 'LOST ' .. what .. ' holds up to ' .. rev .. '-' .. idx ..
      ' but the sink had written up to ' .. held_rev .. '-' .. held_idx})
  end
end

local function stream_allowed(stream)
  allowed(stream, 'XADD', stream, 'MAXLEN', '~', '1', '1-1', 'op', 'o', 'key', 'k', 'event', 'e')
  allowed(stream, 'XINFO', 'STREAM', stream)
  allowed(stream, 'EXISTS', stream)
end

local function xadd(stream, maxlen, id, op, key, event)
  if maxlen == '' then
    redis.call('XADD', stream, id, 'op', op, 'key', key, 'event', event)
  else
    redis.call('XADD', stream, 'MAXLEN', '~', maxlen, id, 'op', op, 'key', key, 'event', event)
  end
end

local function checkpoint_allowed(checkpoint)
  allowed(checkpoint, 'HMGET', checkpoint, 'f')
  allowed(checkpoint, 'HSET', checkpoint, 'f', 'v')
  allowed(checkpoint, 'HDEL', checkpoint, 'f')
end

local function checkpoint_position(checkpoint)
  local saved = redis.call('HMGET', checkpoint, 'revision', 'index')
  return tonumber(saved[1]) or -1, tonumber(saved[2]) or -1
end
"""

# The loop of the pubsub and mirror scripts, whose position is a checkpoint hash: ``apply(i)``
# for every event past the checkpoint (its fields start at ARGV[i], revision and index
# first), then the position reached saved in the same script call as the writes.
_CHECKPOINTED = """
local function checkpointed(checkpoint, last_event, first, stride, apply)
  local last_rev, last_idx = checkpoint_position(checkpoint)
  not_behind('checkpoint ' .. checkpoint, last_rev, last_idx)
  owned()
  local saved_rev, saved_idx = nil, nil
  local written, skipped = 0, 0
  for i = first, EVENTS_END, stride do
    local rev, idx = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
    if after(rev, idx, last_rev, last_idx) then
      apply(i)
      last_rev, last_idx = rev, idx
      saved_rev, saved_idx = ARGV[i], ARGV[i + 1]
      written = written + 1
    else
      skipped = skipped + 1
    end
  end
  if written > 0 then
    redis.call('HSET', checkpoint, 'revision', saved_rev, 'index', saved_idx, 'event', last_event)
  end
  return {written, skipped}
end
"""

STREAM = (
    _PRELUDE
    + """
-- One stream; the stream's own last id is the position.
-- KEYS[1] stream; ARGV[1] MAXLEN or ''; then per event: revision, index, op, key, event JSON.
local stream, maxlen = KEYS[1], ARGV[1]
stream_allowed(stream)
local last_rev, last_idx = last_id(stream)
last_rev, last_idx = last_rev or -1, last_idx or -1
not_behind('stream ' .. stream, last_rev, last_idx)
owned()
local written, skipped = 0, 0
for i = 2, EVENTS_END, 5 do
  local rev, idx = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  if after(rev, idx, last_rev, last_idx) then
    xadd(stream, maxlen, ARGV[i] .. '-' .. ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4])
    last_rev, last_idx = rev, idx
    written = written + 1
  else
    skipped = skipped + 1
  end
end
return {written, skipped}
"""
)

ROUTED = (
    _PRELUDE
    + """
-- Several streams chosen by a template; the checkpoint hash is the position.
-- KEYS[1] checkpoint hash, KEYS[2] set of the streams written so far, KEYS[3..LAST_KEY]
-- streams.
-- ARGV[1] MAXLEN or '', ARGV[2] JSON of the batch's last event; then per event: target (index
-- into KEYS, 0 for a marker, which goes to every known stream), revision, index, op, key, JSON.
-- A stream first written while a snapshot is open gets that snapshot's begin marker first, so
-- every stream shows snapshot_begin ... snapshot_end around its part of a snapshot.
local checkpoint, known_set, maxlen, last_event = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
checkpoint_allowed(checkpoint)
allowed(known_set, 'SISMEMBER', known_set, 'm')
allowed(known_set, 'SADD', known_set, 'm')
for k = 3, LAST_KEY do
  stream_allowed(KEYS[k])
end
local last_rev, last_idx = checkpoint_position(checkpoint)
not_behind('checkpoint ' .. checkpoint, last_rev, last_idx)
owned()
local saved_rev, saved_idx = nil, nil
local open = redis.call('HMGET', checkpoint, 'begin_id', 'begin_key', 'begin_event')
local begin = nil
if open[1] then
  begin = {id = open[1], key = open[2], event = open[3]}
end

local first_rev, first_idx = nil, nil
for i = 3, EVENTS_END, 6 do
  local rev, idx = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  if after(rev, idx, last_rev, last_idx) then
    first_rev, first_idx = rev, idx
    break
  end
end
if first_rev == nil then
  return {0, (EVENTS_END - 2) / 6}
end

local known = {}
for k = 3, LAST_KEY do
  local stream = KEYS[k]
  known[stream] = redis.call('SISMEMBER', known_set, stream) == 1
  local floor_rev, floor_idx = first_rev, first_idx
  if begin and not known[stream] then
    local begin_rev, begin_idx = string.match(begin.id, '^(%d+)-(%d+)$')
    floor_rev, floor_idx = tonumber(begin_rev), tonumber(begin_idx)
  end
  local top_rev, top_idx = last_id(stream)
  if top_rev and not after(floor_rev, floor_idx, top_rev, top_idx) then
    return redis.error_reply('ERR stream ' .. stream .. ' already holds ' .. top_rev .. '-' ..
      top_idx .. ', past the checkpoint ' .. checkpoint .. ': another pipeline writes it or ' ..
      'the checkpoint was removed')
  end
end

local written, skipped = 0, 0
for i = 3, EVENTS_END, 6 do
  local target, rev, idx = tonumber(ARGV[i]), tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  if after(rev, idx, last_rev, last_idx) then
    local id, op, key, event = ARGV[i + 1] .. '-' .. ARGV[i + 2], ARGV[i + 3], ARGV[i + 4],
      ARGV[i + 5]
    if target == 0 then
      if op == 'snapshot_begin' then
        begin = {id = id, key = key, event = event}
      end
      for k = 3, LAST_KEY do
        if known[KEYS[k]] then
          xadd(KEYS[k], maxlen, id, op, key, event)
        end
      end
      if op == 'snapshot_end' then
        begin = nil
      end
    else
      local stream = KEYS[target]
      if not known[stream] then
        redis.call('SADD', known_set, stream)
        known[stream] = true
        if begin then
          xadd(stream, maxlen, begin.id, 'snapshot_begin', begin.key, begin.event)
        end
      end
      xadd(stream, maxlen, id, op, key, event)
    end
    last_rev, last_idx = rev, idx
    saved_rev, saved_idx = ARGV[i + 1], ARGV[i + 2]
    written = written + 1
  else
    skipped = skipped + 1
  end
end
redis.call('HSET', checkpoint, 'revision', saved_rev, 'index', saved_idx, 'event', last_event)
if begin then
  redis.call('HSET', checkpoint, 'begin_id', begin.id, 'begin_key', begin.key,
    'begin_event', begin.event)
else
  redis.call('HDEL', checkpoint, 'begin_id', 'begin_key', 'begin_event')
end
return {written, skipped}
"""
)

PUBSUB = (
    _PRELUDE
    + _CHECKPOINTED
    + """
-- PUBLISH on one channel; the checkpoint hash is the position.
-- KEYS[1] checkpoint hash; ARGV[1] channel, ARGV[2] JSON of the batch's last event; then per
-- event: revision, index, event JSON.
local checkpoint, channel, last_event = KEYS[1], ARGV[1], ARGV[2]
checkpoint_allowed(checkpoint)
if not redis.acl_check_cmd('PUBLISH', channel, 'm') then
  error({err = "NOPERM the user may not PUBLISH on channel '" .. channel .. "'"})
end
return checkpointed(checkpoint, last_event, 3, 3, function(i)
  redis.call('PUBLISH', channel, ARGV[i + 2])
end)
"""
)

MIRROR = (
    _PRELUDE
    + _CHECKPOINTED
    + """
-- A hash equal to the etcd prefix; the checkpoint hash is the position.
-- KEYS[1] checkpoint, KEYS[2] mirror hash (key -> value), KEYS[3] its mod_revisions (key ->
-- revision), KEYS[4], KEYS[5] the same two under construction during a snapshot, KEYS[6] the
-- staged changes of a revision that continues past a call (key -> op letter .. value).
-- ARGV[1] JSON of the batch's last event; then per event: revision, index, op, key, value,
-- guard revision (the key's mod_revision; the deletion's revision for a delete), more (1 when
-- more changes of the revision follow).
-- A snapshot is built aside and renamed over the mirror at snapshot_end, so a resync drops the
-- keys deleted during the gap, and readers never see a half-built mirror. A revision's changes
-- are applied together at its last change (in this call, or staged by earlier calls), so
-- readers never see half a transaction either.
local checkpoint, mirror, revisions, next_mirror, next_revisions, staged =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local last_event = ARGV[1]
checkpoint_allowed(checkpoint)
for k = 2, 6 do
  allowed(KEYS[k], 'HSET', KEYS[k], 'f', 'v')
  allowed(KEYS[k], 'HGET', KEYS[k], 'f')
  allowed(KEYS[k], 'HDEL', KEYS[k], 'f')
  allowed(KEYS[k], 'UNLINK', KEYS[k])
  allowed(KEYS[k], 'EXISTS', KEYS[k])
end
allowed(staged, 'HSCAN', staged, '0')
allowed(next_mirror, 'RENAME', next_mirror, mirror)
allowed(next_revisions, 'RENAME', next_revisions, revisions)

local function change(op, key, value, guard_text)
  local guard = tonumber(guard_text)
  local current = tonumber(redis.call('HGET', revisions, key))
  if op == 'delete' then
    if current ~= nil and current < guard then
      redis.call('HDEL', mirror, key)
      redis.call('HDEL', revisions, key)
    end
  elseif current == nil or current < guard then
    redis.call('HSET', mirror, key, value)
    redis.call('HSET', revisions, key, guard_text)
  end
end

local letters = {create = 'c', update = 'u', delete = 'd'}
local ops = {c = 'create', u = 'update', d = 'delete'}
local pending = {}  -- ARGV offsets of this call's changes of an unfinished revision

local function apply_staged(guard_text)
  local cursor = '0'
  repeat
    local reply = redis.call('HSCAN', staged, cursor, 'COUNT', 1000)
    cursor = reply[1]
    local fields = reply[2]
    for f = 1, #fields, 2 do
      local entry = fields[f + 1]
      change(ops[string.sub(entry, 1, 1)], fields[f], string.sub(entry, 2), guard_text)
    end
  until cursor == '0'
  redis.call('UNLINK', staged)
end

local result = checkpointed(checkpoint, last_event, 2, 7, function(i)
  local op, key, value = ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  if op == 'snapshot' then
    redis.call('HSET', next_mirror, key, value)
    redis.call('HSET', next_revisions, key, ARGV[i + 5])
  elseif letters[op] then
    if ARGV[i + 6] == '1' then
      pending[#pending + 1] = i
    else
      apply_staged(ARGV[i + 5])
      for _, j in ipairs(pending) do
        change(ARGV[j + 2], ARGV[j + 3], ARGV[j + 4], ARGV[j + 5])
      end
      pending = {}
      change(op, key, value, ARGV[i + 5])
    end
  elseif op == 'snapshot_begin' then
    -- a resync: whatever was staged of a revision it replaces is dropped with the rest
    pending = {}
    redis.call('UNLINK', next_mirror, next_revisions, staged)
  elseif op == 'snapshot_end' then
    if redis.call('EXISTS', next_mirror) == 1 then
      redis.call('RENAME', next_mirror, mirror)
      redis.call('RENAME', next_revisions, revisions)
    else
      redis.call('UNLINK', mirror, revisions)
    end
  end
end)
for _, j in ipairs(pending) do
  redis.call('HSET', staged, ARGV[j + 3], letters[ARGV[j + 2]] .. ARGV[j + 4])
end
return result
"""
)
