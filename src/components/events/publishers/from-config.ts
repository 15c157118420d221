// The publishers EVENTS_PUBLISHERS names, built from the validated config (which already required
// each one's URL).
import type { EventsConfig } from '../../../config.js';
import type { Logger } from '../../../platform/logger.js';
import { createNatsPublisher } from './nats.js';
import type { EventPublisher } from './publisher.js';
import { createRabbitMqPublisher } from './rabbitmq.js';
import { createRedisStreamsPublisher } from './redis-streams.js';

export function publishersFromConfig(events: EventsConfig, redisUrl: string | undefined, logger: Logger): EventPublisher[] {
  const timeoutMs = events.publishTimeoutMs;
  const missing = (variable: string): never => {
    throw new Error(`events: ${variable} is not set`);
  };
  return events.publishers.map((name) => {
    switch (name) {
      case 'nats':
        return createNatsPublisher({
          url: events.natsUrl ?? missing('NATS_URL'),
          stream: events.natsStream,
          subjectPrefix: events.natsSubjectPrefix,
          timeoutMs,
          logger,
        });
      case 'rabbitmq':
        return createRabbitMqPublisher({ url: events.amqpUrl ?? missing('AMQP_URL'), exchange: events.rabbitmqExchange, timeoutMs, logger });
      case 'redis':
        return createRedisStreamsPublisher({
          url: redisUrl ?? missing('REDIS_URL'),
          stream: events.redisStream,
          maxLength: events.redisStreamMaxLength,
          timeoutMs,
          logger,
        });
    }
  });
}
