// The SSRF guard: which webhook targets the service may connect to. Checked at registration (the URL's
// scheme, and its host when it is a literal IP) and again at connect time on the address the name
// resolved to (a `lookup` given to the HTTP request), so a name that later resolves elsewhere (DNS
// rebinding) still cannot reach loopback, private, link-local or metadata addresses.
import { lookup as dnsLookup, type LookupAddress, type LookupAllOptions, type LookupOneOptions } from 'node:dns';
import { BlockList, isIP, type LookupFunction } from 'node:net';

/** Address ranges no webhook may reach (unless WEBHOOK_ALLOW_PRIVATE=true). */
const BLOCKED_IPV4: ReadonlyArray<readonly [string, number, string]> = [
  ['0.0.0.0', 8, 'this network'],
  ['10.0.0.0', 8, 'private'],
  ['100.64.0.0', 10, 'carrier-grade NAT'],
  ['127.0.0.0', 8, 'loopback'],
  ['169.254.0.0', 16, 'link-local (cloud metadata)'],
  ['172.16.0.0', 12, 'private'],
  ['192.0.0.0', 24, 'IETF protocol assignments'],
  ['192.0.2.0', 24, 'documentation'],
  ['192.168.0.0', 16, 'private'],
  ['198.18.0.0', 15, 'benchmarking'],
  ['198.51.100.0', 24, 'documentation'],
  ['203.0.113.0', 24, 'documentation'],
  ['224.0.0.0', 4, 'multicast'],
  ['240.0.0.0', 4, 'reserved'],
];
const BLOCKED_IPV6: ReadonlyArray<readonly [string, number, string]> = [
  ['::', 128, 'unspecified'],
  ['::1', 128, 'loopback'],
  ['64:ff9b::', 96, 'NAT64 (reaches IPv4 space)'],
  ['2001:db8::', 32, 'documentation'],
  ['fc00::', 7, 'unique local (private; includes the fd00:ec2::254 metadata address)'],
  ['fe80::', 10, 'link-local'],
  ['fec0::', 10, 'site-local'],
  ['ff00::', 8, 'multicast'],
];

/** One BlockList per range, so a refusal can say which kind of address it was. */
const BLOCKED: ReadonlyArray<{ readonly list: BlockList; readonly kind: string }> = [
  ...BLOCKED_IPV4.map(([network, prefix, kind]) => ({ list: subnet(network, prefix, 'ipv4'), kind })),
  ...BLOCKED_IPV6.map(([network, prefix, kind]) => ({ list: subnet(network, prefix, 'ipv6'), kind })),
];

function subnet(network: string, prefix: number, family: 'ipv4' | 'ipv6'): BlockList {
  const list = new BlockList();
  list.addSubnet(network, prefix, family);
  return list;
}

/** An IPv4-mapped IPv6 address (::ffff:a.b.c.d, also in hex form) as the IPv4 address it is. */
function unmapped(address: string): { address: string; family: 'ipv4' | 'ipv6' } {
  if (isIP(address) === 4) return { address, family: 'ipv4' };
  const lower = address.toLowerCase();
  const dotted = /^(?:0{0,4}:){0,5}:?ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(lower);
  if (dotted?.[1]) return { address: dotted[1], family: 'ipv4' };
  const hex = /^(?:0{0,4}:){0,5}:?ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(lower);
  if (hex?.[1] && hex[2]) {
    const high = Number.parseInt(hex[1], 16);
    const low = Number.parseInt(hex[2], 16);
    return { address: `${high >> 8}.${high & 255}.${low >> 8}.${low & 255}`, family: 'ipv4' };
  }
  return { address: lower, family: 'ipv6' };
}

/** Why `address` may not be reached, or undefined when it may. */
export function blockedReason(rawAddress: string): string | undefined {
  const { address, family } = unmapped(rawAddress);
  const blocked = BLOCKED.find(({ list }) => list.check(address, family));
  return blocked ? `${rawAddress} is a ${blocked.kind} address` : undefined;
}

/** The URL's host as an IP address when it is one ([::1] -> ::1), else undefined. */
export function literalAddressOf(url: URL): string | undefined {
  const host = url.hostname.startsWith('[') && url.hostname.endsWith(']') ? url.hostname.slice(1, -1) : url.hostname;
  return isIP(host) === 0 ? undefined : host;
}

export interface TargetPolicy {
  /** http:// targets allowed (development); otherwise https only. */
  readonly allowHttp: boolean;
  /** Loopback, private, link-local and metadata addresses allowed (development, tests). */
  readonly allowPrivate: boolean;
}

/**
 * What is wrong with `raw` as a webhook target under `policy`, or undefined: the checks that need
 * no DNS (scheme, credentials, literal IPs). Names are checked when connecting.
 */
export function targetProblem(raw: string, policy: TargetPolicy): string | undefined {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return 'must be an absolute URL';
  }
  if (url.protocol !== 'https:' && !(policy.allowHttp && url.protocol === 'http:')) {
    return policy.allowHttp ? 'must be an http or https URL' : 'must be an https URL';
  }
  if (url.username !== '' || url.password !== '') return 'must not carry credentials';
  if (url.hash !== '') return 'must not have a fragment';
  if (url.hostname === '') return 'must name a host';
  const literal = literalAddressOf(url);
  if (literal !== undefined && !policy.allowPrivate) {
    const reason = blockedReason(literal);
    if (reason !== undefined) return `must not target ${reason}`;
  }
  return undefined;
}

/** A target refused by the guard: the attempt fails with this reason; nothing was sent. */
export class RefusedTargetError extends Error {
  readonly code = 'WEBHOOK_TARGET_REFUSED';
  constructor(reason: string) {
    super(`refused by the SSRF guard: ${reason}`);
    this.name = 'RefusedTargetError';
  }
}

type LookupCallback = (error: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/**
 * A `lookup` for http(s).request that resolves as usual and refuses the connection when any address
 * the name resolved to is blocked: the check is on the very addresses the socket will connect to.
 */
export function guardedLookup(allowPrivate: boolean): LookupFunction {
  const lookup = (hostname: string, options: LookupOneOptions | LookupAllOptions, callback: LookupCallback): void => {
    dnsLookup(hostname, { ...options, all: true }, (error, addresses) => {
      if (error) {
        callback(error, '');
        return;
      }
      if (!allowPrivate) {
        for (const { address } of addresses) {
          const reason = blockedReason(address);
          if (reason !== undefined) {
            callback(new RefusedTargetError(`${hostname} resolves to ${reason}`), '');
            return;
          }
        }
      }
      const first = addresses[0];
      if (options.all) callback(null, addresses);
      else if (first) callback(null, first.address, first.family);
      else callback(Object.assign(new Error(`${hostname} did not resolve`), { code: 'ENOTFOUND' }), '');
    });
  };
  return lookup as LookupFunction;
}
