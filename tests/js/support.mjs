// Helpers shared by the official-client suites (not a test file: node --test runs only the
// *.test.mjs files it is given).

/// Resolves after `ms` milliseconds.
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/// Retries `check` (which throws until it holds) every 20 ms for up to `ms`; rethrows its last
/// error after that.
export async function eventually(check, ms = 5000) {
  const until = Date.now() + ms;
  for (;;) {
    try {
      return check();
    } catch (error) {
      if (Date.now() > until) throw error;
      await sleep(20);
    }
  }
}

/// Keeps every `name` event a connection receives: the argument, or the argument list when
/// there are several.
export function record(connection, name) {
  const got = [];
  connection.on(name, (...args) => got.push(args.length === 1 ? args[0] : args));
  return got;
}
