// The typed schema Kysely checks queries against. Each component declares its own tables here by
// module augmentation in its repo file, so a component's SQL and its table types live together.
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface Tables {}
