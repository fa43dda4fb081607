-- Argo CD health of a sluice.dev/InferenceService.
--
-- Reads named conditions and fields; it never counts conditions, so a condition
-- type added later (MetricsAvailable, Scaling, Canary, ...) changes nothing here.
--   Progressing  no status yet, or status.observedGeneration behind
--                metadata.generation (the operator has not seen the spec yet);
--                Ready False with reason RollingOut; Progressing True (a rollout
--                or scale-up under way); rollout phase Progressing or Promoting;
--                Ready missing or Unknown.
--   Degraded     SpecValid False, or Ready False with reason InvalidSpec (a spec
--                the operator cannot serve); rollout phase RolledBack (a canary
--                failed its analysis, until the next spec change starts a new
--                rollout); Ready False for any other reason.
--   Suspended    Ready False with reason ScaledToZero (spec.replicas is 0 on purpose);
--                a Progressing canary with status.rollout.paused (spec.rollout.paused),
--                or awaitingDecision (inconclusive at the progress deadline).
--   Healthy      Ready True, observedGeneration == generation, nothing in flight.
local hs = {}

local function condition(status, type)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function say(state, message)
  hs.status = state
  hs.message = message
  return hs
end

-- The message of a condition (or of status.rollout), else the fallback.
local function because(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

local status = obj.status
if status == nil then
  return say("Progressing", "Waiting for the Sluice operator to observe the InferenceService")
end

local generation = obj.metadata.generation
local observed = status.observedGeneration
if observed == nil or (generation ~= nil and observed < generation) then
  return say("Progressing", "Waiting for the Sluice operator to observe generation "
    .. tostring(generation))
end

local specValid = condition(status, "SpecValid")
local ready = condition(status, "Ready")
local progressing = condition(status, "Progressing")
local phase = nil
if status.rollout ~= nil then
  phase = status.rollout.phase
end

if specValid ~= nil and specValid.status == "False" then
  return say("Degraded", "Invalid spec: " .. because(specValid, "the operator cannot serve it"))
end
if ready ~= nil and ready.status == "False" and ready.reason == "InvalidSpec" then
  return say("Degraded", because(ready, "The spec cannot be served"))
end
if phase == "RolledBack" then
  return say("Degraded", "Canary rolled back: "
    .. because(status.rollout, "the canary failed its analysis"))
end
if phase == "RollingBack" then
  return say("Degraded", "Canary rolling back: "
    .. because(status.rollout, "the canary failed its analysis"))
end
if phase == "Progressing" and status.rollout.paused == true then
  return say("Suspended", "Canary paused (spec.rollout.paused): "
    .. because(status.rollout, "held where it is"))
end
if phase == "Progressing" and status.rollout.awaitingDecision == true then
  return say("Suspended", "Canary awaiting a decision (sluice promote or abort): "
    .. because(status.rollout, "inconclusive at the progress deadline"))
end
if phase == "Progressing" or phase == "Promoting" then
  return say("Progressing", "Canary " .. string.lower(phase) .. ": "
    .. because(status.rollout, because(progressing, "under way")))
end
if progressing ~= nil and progressing.status == "True" then
  return say("Progressing", because(progressing, "A rollout is under way"))
end
if ready == nil or ready.status == "Unknown" then
  return say("Progressing", "Waiting for the Ready condition")
end
if ready.status == "True" then
  return say("Healthy", because(ready, "Serving"))
end
if ready.reason == "RollingOut" then
  return say("Progressing", because(ready, "Rolling out"))
end
if ready.reason == "ScaledToZero" then
  return say("Suspended", because(ready, "Scaled to zero"))
end
return say("Degraded", because(ready, "Not ready: " .. tostring(ready.reason)))
