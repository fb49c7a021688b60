/** VHD time stamps count seconds from 2000-01-01 00:00:00 UTC (spec "Time Stamp"). */
export const VHD_EPOCH_UNIX_SECONDS = 946_684_800;

/** A Date as a VHD time stamp (clamped to the 32-bit field). */
export function vhdTimestamp(date: Date = new Date()): number {
  const s = Math.floor(date.getTime() / 1000) - VHD_EPOCH_UNIX_SECONDS;
  return Math.min(Math.max(s, 0), 0xffffffff);
}

/** A VHD time stamp as a Date. */
export function dateFromVhdTimestamp(ts: number): Date {
  return new Date((ts + VHD_EPOCH_UNIX_SECONDS) * 1000);
}
