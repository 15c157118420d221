// grpc.reflection.v1.ServerReflection: lets grpcurl, Postman and friends list the services and fetch
// their descriptors, so nobody needs the .proto files to explore the API. No maintained Connect
// package for Node offers it (@grpc/reflection serves grpc-js servers only), and it is small: the
// descriptors are already embedded in the generated code.
import { createRegistry, toBinary, type DescFile, type DescService, type MessageInitShape } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema } from '@bufbuild/protobuf/wkt';
import { Code, type ServiceImpl } from '@connectrpc/connect';
import type {
  ServerReflection,
  ServerReflectionRequest,
  ServerReflectionResponseSchema,
} from './gen/grpc/reflection/v1/reflection_pb.js';

/** A file and every file it imports, transitively, each once (the order grpcurl accepts: the file first). */
function withDependencies(file: DescFile): DescFile[] {
  const seen = new Map<string, DescFile>();
  const visit = (current: DescFile) => {
    if (seen.has(current.name)) return;
    seen.set(current.name, current);
    current.dependencies.forEach(visit);
  };
  visit(file);
  return [...seen.values()];
}

type Answer = NonNullable<MessageInitShape<typeof ServerReflectionResponseSchema>['messageResponse']>;

export function reflectionServiceImpl(services: readonly DescService[]): ServiceImpl<typeof ServerReflection> {
  const registry = createRegistry(...services.map((service) => service.file));
  const files = new Map<string, DescFile>();
  for (const service of services) for (const file of withDependencies(service.file)) files.set(file.proto.name, file);

  const descriptors = (file: DescFile): Answer => ({
    case: 'fileDescriptorResponse',
    value: { fileDescriptorProto: withDependencies(file).map((each) => toBinary(FileDescriptorProtoSchema, each.proto)) },
  });
  const notFound = (errorMessage: string): Answer => ({ case: 'errorResponse', value: { errorCode: Code.NotFound, errorMessage } });

  /** A symbol: a message, enum or service, or a method (`package.Service.Method`). */
  const fileOfSymbol = (symbol: string): DescFile | undefined => {
    const direct = registry.get(symbol);
    if (direct) return direct.file;
    const dot = symbol.lastIndexOf('.');
    const owner = dot > 0 ? registry.get(symbol.slice(0, dot)) : undefined;
    return owner?.kind === 'service' && owner.methods.some((method) => method.name === symbol.slice(dot + 1)) ? owner.file : undefined;
  };

  const answerTo = (kind: ServerReflectionRequest['messageRequest']): Answer => {
    switch (kind.case) {
      case 'listServices':
        return { case: 'listServicesResponse', value: { service: services.map((service) => ({ name: service.typeName })) } };
      case 'fileByFilename': {
        const file = files.get(kind.value);
        return file ? descriptors(file) : notFound(`File not found: ${kind.value}`);
      }
      case 'fileContainingSymbol': {
        const file = fileOfSymbol(kind.value);
        return file ? descriptors(file) : notFound(`Symbol not found: ${kind.value}`);
      }
      case 'fileContainingExtension':
        return notFound('This server defines no extensions');
      case 'allExtensionNumbersOfType':
        return registry.get(kind.value)?.kind === 'message'
          ? { case: 'allExtensionNumbersResponse', value: { baseTypeName: kind.value, extensionNumber: [] } }
          : notFound(`Type not found: ${kind.value}`);
      default:
        return { case: 'errorResponse', value: { errorCode: Code.InvalidArgument, errorMessage: 'Empty reflection request' } };
    }
  };

  return {
    async *serverReflectionInfo(requests) {
      for await (const request of requests) {
        yield { validHost: request.host, originalRequest: request, messageResponse: answerTo(request.messageRequest) };
      }
    },
  };
}
