/** The end-to-end part of `vhdcrypt bench`: filled in once the engine lands (issue 6). */
export interface EndToEndResult {
  readonly description: string;
  readonly seconds: number;
  readonly mbPerSecond: number;
}

/** Encrypt a temporary image of `sizeMiB` and time it; null until the engine exists. */
export async function runEndToEndBench(_opts: { sizeMiB: number }): Promise<EndToEndResult | null> {
  return null;
}
