/**
 * A seeded generator of numbers in [0, 1) (mulberry32), for reproducible fault draws. The seed is
 * mixed from up to three integers in 32-bit arithmetic: multiplying floats instead would lose the
 * low bits and give many streams the same draws.
 *
 * @internal
 */
export const seeded = (seed: number, index = 0, stream = 0): (() => number) => {
  let state = Math.imul((seed >>> 0) ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(index + 1, 0xc2b2ae35) ^
    Math.imul(stream + 1, 0x27d4eb2f)
  state = Math.imul(state ^ (state >>> 16), 0x7feb352d) >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
