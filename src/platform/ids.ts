// Ids are UUIDv7: time-ordered, so primary-key inserts stay append-mostly in the B-tree.
import { v7 } from 'uuid';

export const newId = (): string => v7();

const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const isUuid = (value: string): boolean => UUID_PATTERN.test(value);
