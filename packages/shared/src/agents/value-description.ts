/**
 * How a validation message shows the value it rejected (`got "ten"`, `got nothing`, `got a
 * function`): the registry and the controls validation word their problems the same way.
 */
export function describeValue(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (typeof value === 'function') return 'a function';
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}
