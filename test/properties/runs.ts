/** How many cases each property tries: its default, or PROPERTY_RUNS for a longer hunt (`PROPERTY_RUNS=2000 npx vitest run test/properties`). */
export function runs(byDefault: number): number {
  const asked = Number(process.env.PROPERTY_RUNS);
  return Number.isInteger(asked) && asked > 0 ? asked : byDefault;
}
