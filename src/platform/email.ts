// An email address as it is stored and compared: trimmed and lower-cased. Every transport, the CLI
// and the bootstrap admin go through this one rule.
export const canonicalEmail = (email: string): string => email.trim().toLowerCase();
