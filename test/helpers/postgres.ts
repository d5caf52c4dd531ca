import pg from 'pg';

/**
 * The PostgreSQL tests use: RECGATE_TEST_POSTGRES_URL if set, otherwise 127.0.0.1:5432, database `test`,
 * as `postgres` then `root`. Returns the URL that answered, or the reasons none did.
 */
export async function findPostgres(): Promise<{ url: string } | { reason: string }> {
  const candidates = process.env.RECGATE_TEST_POSTGRES_URL
    ? [process.env.RECGATE_TEST_POSTGRES_URL]
    : ['postgres://postgres@127.0.0.1:5432/test', 'postgres://root@127.0.0.1:5432/test'];
  const reasons: string[] = [];
  for (const url of candidates) {
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000 });
    try {
      await client.connect();
      await client.query('SELECT 1');
      return { url };
    } catch (err) {
      reasons.push(
        `${url.replace(/\/\/[^@]*@/, '//…@')}: ${err instanceof Error ? err.message : String(err)}`,
      );
    } finally {
      await client.end().catch(() => undefined);
    }
  }
  return { reason: reasons.join('; ') };
}

/**
 * What a PostgreSQL test does when {@link findPostgres} found no server: on a developer's machine it skips,
 * saying why; in CI (`CI` set to anything but "", "0" or "false") it fails, because there a missing server
 * is a broken setup and a skipped suite would pass unnoticed.
 */
export function postgresUnavailable(t: { skip(message: string): void }, reason: string): void {
  const message = `PostgreSQL is not reachable (${reason}); set RECGATE_TEST_POSTGRES_URL`;
  const ci = process.env.CI;
  if (ci !== undefined && ci !== '' && ci !== '0' && ci.toLowerCase() !== 'false') {
    throw new Error(`${message}. CI is set, so the PostgreSQL tests must run`);
  }
  t.skip(message);
}
