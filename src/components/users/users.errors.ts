import { DomainError } from '../../platform/errors.js';

export const emailTaken = (): DomainError => new DomainError('EMAIL_TAKEN', 'A user with this email already exists');
export const invalidCurrentPassword = (): DomainError =>
  new DomainError('INVALID_CURRENT_PASSWORD', 'The current password is not correct');
