/**
 * The fleet: image jobs spread over many machines through a BullMQ queue on Redis (createFleet to submit and
 * watch, startFleetWorker to run them, startDashboard for a read-only page). Stands on the engine; the
 * single-machine commands never load it and need no Redis.
 */
export { FleetError, type FleetErrorCode } from './errors.js';
export { redisOptions, redactedUrl } from './redis-url.js';
export { DEFAULT_QUEUE, type FleetConnection } from './connection.js';
export {
  createFleet, FleetEvents, progressOf,
  type Fleet, type FleetOptions, type FleetStatus, type RunningJob, type FailedJob, type SubmitInput, type SubmitOptions, type SubmitResult, type JobProgress,
} from './fleet.js';
export { startFleetWorker, type FleetWorker, type FleetWorkerOptions, type JobResult } from './worker.js';
export { checkJobSpec, defaultJobId, type FleetJobSpec, type FleetOperation } from './job-spec.js';
export { classifyFailure, parseFailure } from './failure.js';
export { startDashboard, type Dashboard, type DashboardOptions } from './dashboard.js';
