import { describe, expect, it } from 'vitest';
import { MAX_ERROR_MESSAGE_BYTES, MAX_STACK_BYTES, capError, truncateBytes } from '@werkpilot/shared';

describe('byte caps', () => {
  it('keeps text that fits and cuts what does not, with a marker saying how much, within the cap', () => {
    expect(truncateBytes('short', 100)).toBe('short');
    const cut = truncateBytes('x'.repeat(10_000), 100);
    expect(Buffer.byteLength(cut)).toBeLessThanOrEqual(100);
    expect(cut).toMatch(/^x+… \[truncated \d+ bytes\]$/);
    const kept = cut.indexOf('…');
    expect(cut).toBe(`${'x'.repeat(kept)}… [truncated ${10_000 - kept} bytes]`);
  });

  it('never splits a multi-byte character', () => {
    for (const char of ['é', '€', '😀']) {
      for (let cap = 40; cap < 48; cap++) {
        const cut = truncateBytes(char.repeat(1000), cap);
        expect(Buffer.byteLength(cut)).toBeLessThanOrEqual(cap);
        expect(cut).not.toContain('\uFFFD');
        expect(cut.split('…')[0]!.length % char.length).toBe(0);
      }
    }
  });

  it('caps an error in place, or on a copy of the same class when it is frozen', () => {
    const big = new TypeError('m'.repeat(1_000_000));
    expect(capError(big)).toBe(big);
    expect(Buffer.byteLength(big.message)).toBeLessThanOrEqual(MAX_ERROR_MESSAGE_BYTES);
    expect(Buffer.byteLength(big.stack!)).toBeLessThanOrEqual(MAX_STACK_BYTES);

    const frozen = Object.freeze(Object.assign(new RangeError('f'.repeat(100_000)), { code: 'E_FULL' }));
    const copy = capError(frozen);
    expect(copy).not.toBe(frozen);
    expect(copy).toBeInstanceOf(RangeError);
    expect(copy.name).toBe('RangeError');
    expect((copy as unknown as { code: string }).code).toBe('E_FULL');
    expect(copy.message).toMatch(/^f+… \[truncated \d+ bytes\]$/);
  });
});
