/** The package entry assembles the parts: importing it is enough for engine jobs to read NBD exports. */
import { describe, expect, it } from 'vitest';
import { sourceKindOf } from '../src/image/index.js';
import { NBD_SOURCE_KIND } from '../src/nbd/source-kind.js';

describe('the package entry', () => {
  it('registers the NBD export kind', async () => {
    expect(sourceKindOf('nbd+unix:///?socket=/run/x.sock')).toBeUndefined();
    const api = await import('../src/index.js');
    for (const uri of ['nbd://host/export', 'nbd+unix:///?socket=/run/x.sock', 'nbd+tcp://host:10810/']) {
      expect(sourceKindOf(uri)).toBe(NBD_SOURCE_KIND);
    }
    expect(api.registerSourceKind).toBeTypeOf('function');
  });
});
