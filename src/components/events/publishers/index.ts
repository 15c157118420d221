// The brokers events are published to, one factory each, all behind EventPublisher.
export type { EventPublisher } from './publisher.js';
export { PublishTimeoutError } from './deadline.js';
export { createNatsPublisher, DEFAULT_NATS_STREAM, DEFAULT_NATS_SUBJECT_PREFIX, NATS_DUPLICATE_WINDOW_MS, type NatsPublisherOptions } from './nats.js';
export { createRabbitMqPublisher, DEFAULT_RABBITMQ_EXCHANGE, type RabbitMqPublisherOptions } from './rabbitmq.js';
export {
  createRedisStreamsPublisher,
  DEFAULT_REDIS_STREAM,
  DEFAULT_REDIS_STREAM_MAX_LENGTH,
  type RedisStreamsPublisherOptions,
} from './redis-streams.js';
