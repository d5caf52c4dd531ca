/**
 * A schema migration: a version number (1, 2, 3, … with no gaps, never renumbered once released), a short
 * name for the logs, and the SQL that takes the schema from the previous version to this one. Each backend
 * keeps its own list because SQLite and PostgreSQL differ in types; both lists must reach the same logical
 * schema at the same version.
 */
export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly sql: string;
}
