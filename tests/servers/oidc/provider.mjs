// A real OpenID provider (oidc-provider 9) for kubectl-caas tests, benchmarks and the demo.
//
// It stands in for INDIGO IAM: device authorization grant for a public client, refresh tokens
// with offline_access, revocation, introspection, and test-only login/consent pages
// (devInteractions) that any login name and any password get through.
//
// Options come from the command line (--name value) or, failing that, the environment
// (OIDC_NAME, upper case, dashes as underscores). See `node provider.mjs --help`.
//
// Scopes: openid profile email offline_access wlcg.groups.
//   profile -> preferred_username, name, groups  (IAM also puts `groups` under profile)
//   email   -> email, email_verified
//   wlcg.groups -> wlcg.groups  (WLCG style: group names with a leading slash)
// All granted claims go into the ID token (conformIdTokenClaims: false).
// Accounts: any login name is an account; sub = login name; groups = ["users", "<login>-group"],
// unless an --accounts JSON file ({"<login>": {claim: value, ...}}) overrides claims.
//
// Refresh tokens: issued when offline_access is granted. --rotate-refresh-tokens auto (default,
// oidc-provider's rule: a public client gets a new one at every refresh; reusing a spent one
// revokes the whole grant), always, or never (the same one keeps working, as IAM probably does).
// Audience: `audience=<any string>` on the device request (IAM's parameter) or RFC 8707
// `resource=<URI>` makes the access tokens JWTs with that aud; otherwise they are opaque.
//
// Prints `READY <issuer>` on stdout once it serves. With --log FILE, one JSON line per request
// ({time, method, path, status, ms, route, grant_type for POST /token, error}) is written before
// the answer leaves. SIGTERM/SIGINT: close the server and exit 0.

import * as fs from 'node:fs';
import * as https from 'node:https';
import * as crypto from 'node:crypto';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const OPTIONS = {
  host: { type: 'string', default: '127.0.0.1' },
  port: { type: 'string', default: '0' }, // 0: let the kernel pick; the issuer names the real port
  cert: { type: 'string' },
  key: { type: 'string' },
  log: { type: 'string' },
  'client-id': { type: 'string', default: 'kubectl-caas-test' },
  'rs-client-id': { type: 'string', default: 'kubectl-caas-test-rs' },
  'rs-client-secret': { type: 'string', default: 'kubectl-caas-test-rs-secret' },
  'id-token-ttl': { type: 'string', default: '600' },
  'access-token-ttl': { type: 'string', default: '3600' },
  'device-code-ttl': { type: 'string', default: '600' },
  'refresh-token-ttl': { type: 'string', default: String(30 * 24 * 3600) },
  // auto: oidc-provider's default (public clients rotate on every use); always; never
  'rotate-refresh-tokens': { type: 'string', default: 'auto' },
  'trailing-slash': { type: 'string', default: 'false' }, // issuer "https://host:port/" like IAM
  // IAM sends no `interval` in the device response, and neither does oidc-provider; a value
  // here adds one (seconds), for tests that want a client to poll faster than the 5 s default.
  'device-interval': { type: 'string', default: '' },
  accounts: { type: 'string' },
  help: { type: 'boolean', default: false },
};

function readOptions() {
  const { values } = parseArgs({ options: OPTIONS, strict: true, allowPositionals: false });
  const out = {};
  for (const [name, spec] of Object.entries(OPTIONS)) {
    const envName = `OIDC_${name.toUpperCase().replaceAll('-', '_')}`;
    // An explicit argument wins over the environment, which wins over the default.
    const given = process.argv.some((a) => a === `--${name}` || a.startsWith(`--${name}=`));
    out[name] = given ? values[name] : (process.env[envName] ?? values[name] ?? spec.default);
  }
  return out;
}

const opts = readOptions();
if (opts.help) {
  process.stdout.write(`usage: node provider.mjs --cert FILE --key FILE [--port N] [--log FILE]
  ${Object.keys(OPTIONS).filter((n) => n !== 'help').map((n) => `--${n}`).join(' ')}
  (or OIDC_<NAME> environment variables)\n`);
  process.exit(0);
}
for (const required of ['cert', 'key']) {
  if (!opts[required]) {
    process.stderr.write(`provider.mjs: --${required} (or OIDC_${required.toUpperCase()}) is required\n`);
    process.exit(2);
  }
}

function seconds(name) {
  const value = Number(opts[name]);
  if (!Number.isInteger(value) || value <= 0) {
    process.stderr.write(`provider.mjs: --${name} must be a positive integer, got ${opts[name]}\n`);
    process.exit(2);
  }
  return value;
}

const TTL = {
  IdToken: seconds('id-token-ttl'),
  AccessToken: seconds('access-token-ttl'),
  DeviceCode: seconds('device-code-ttl'),
  RefreshToken: seconds('refresh-token-ttl'),
};
const deviceInterval = opts['device-interval'] === '' ? null : seconds('device-interval');
const accountOverrides = opts.accounts ? JSON.parse(fs.readFileSync(opts.accounts, 'utf8')) : {};
const rotation = opts['rotate-refresh-tokens'];
if (!['auto', 'always', 'never'].includes(rotation)) {
  process.stderr.write('provider.mjs: --rotate-refresh-tokens must be auto, always or never\n');
  process.exit(2);
}

// Request log: one JSON line per HTTP request, written synchronously before the response goes
// out, so a test that has its answer can already count the line.
const logFd = opts.log ? fs.openSync(opts.log, 'a') : null;
function logLine(record) {
  if (logFd !== null) fs.writeSync(logFd, `${JSON.stringify(record)}\n`);
}

// In-memory storage that, unlike the bundled one, keeps expired entries for a while: the bundled
// adapter forgets a device code at expiry (+ clock tolerance), after which polls answer
// invalid_grant instead of expired_token. The models still check expiry themselves.
const RETENTION_MS = 15 * 60 * 1000;
const store = new Map(); // key -> { payload, expiresAt }
let writes = 0;
function prune() {
  const cutoff = Date.now() - RETENTION_MS;
  for (const [key, entry] of store) {
    if (entry.expiresAt < cutoff) store.delete(key);
  }
}
class TestAdapter {
  constructor(model) { this.model = model; }

  key(id) { return `${this.model}:${id}`; }

  get(key) { return store.get(key)?.payload; }

  async upsert(id, payload, expiresIn) {
    writes += 1;
    if (writes % 1000 === 0) prune();
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
    const key = this.key(id);
    store.set(key, { payload, expiresAt });
    if (payload.grantId) {
      const grantKey = `grant:${payload.grantId}`;
      const members = store.get(grantKey)?.payload ?? new Set();
      members.add(key);
      store.set(grantKey, { payload: members, expiresAt: Infinity });
    }
    if (payload.userCode) store.set(`userCode:${payload.userCode}`, { payload: id, expiresAt });
    if (this.model === 'Session') store.set(`sessionUid:${payload.uid}`, { payload: id, expiresAt });
  }

  async find(id) { return this.get(this.key(id)); }

  async findByUserCode(userCode) {
    const id = this.get(`userCode:${userCode}`);
    return id === undefined ? undefined : this.find(id);
  }

  async findByUid(uid) {
    const id = this.get(`sessionUid:${uid}`);
    return id === undefined ? undefined : this.find(id);
  }

  async consume(id) {
    const payload = this.get(this.key(id));
    if (payload) payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) { store.delete(this.key(id)); }

  async revokeByGrantId(grantId) {
    const grantKey = `grant:${grantId}`;
    for (const key of store.get(grantKey)?.payload ?? []) store.delete(key);
    store.delete(grantKey);
  }
}

function claimsFor(login) {
  return {
    sub: login,
    preferred_username: login,
    name: login,
    email: `${login}@example.org`,
    email_verified: true,
    groups: ['users', `${login}-group`],
    'wlcg.groups': ['/users', `/${login}-group`],
    ...(accountOverrides[login] ?? {}),
  };
}

// TLS first, port 0 allowed: listen, then build the provider with the issuer that names the
// port we actually got.
const server = https.createServer({
  cert: fs.readFileSync(opts.cert),
  key: fs.readFileSync(opts.key),
});
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(Number(opts.port), opts.host, resolve);
});
const { port } = server.address();
const hostForUrl = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
const trailingSlash = ['1', 'true', 'yes'].includes(String(opts['trailing-slash']).toLowerCase());
const issuer = `https://${hostForUrl}:${port}${trailingSlash ? '/' : ''}`;

// A fresh RS256 signing key at every start (the bundled development keys never change, and
// consumers must fetch the JWKS at run time anyway).
const signingKey = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey
  .export({ format: 'jwk' });
const jwks = { keys: [{ ...signingKey, kid: crypto.randomBytes(8).toString('hex'), use: 'sig', alg: 'RS256' }] };

const clientId = opts['client-id'];
const AUDIENCE_PREFIX = 'urn:kubectl-caas-test:audience:';
const provider = new Provider(issuer, {
  adapter: TestAdapter,
  jwks,
  clients: [
    {
      client_id: clientId,
      client_name: 'kubectl-caas (test)',
      token_endpoint_auth_method: 'none',
      grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
      response_types: [],
      redirect_uris: [],
    },
    {
      // Confidential "resource server" client: the public client may only introspect its own
      // tokens, and tests want to introspect any of them.
      client_id: opts['rs-client-id'],
      client_secret: opts['rs-client-secret'],
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: [],
      response_types: [],
      redirect_uris: [],
    },
  ],
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  scopes: ['openid', 'offline_access', 'profile', 'email', 'wlcg.groups'],
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name', 'groups'],
    email: ['email', 'email_verified'],
    'wlcg.groups': ['wlcg.groups'],
  },
  conformIdTokenClaims: false,
  extraParams: ['audience'],
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() { return claimsFor(id); },
    };
  },
  features: {
    deviceFlow: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
    devInteractions: { enabled: true },
    // RFC 8707 `resource` (an absolute URI): the access token becomes a JWT with aud = resource.
    // IAM's `audience` parameter (any string) on the device request is mapped onto a resource
    // whose JWT access tokens carry aud = that string. Unlike IAM, the audience granted at the
    // device request is kept for the poll and refreshes (an `audience` sent there is ignored).
    resourceIndicators: {
      enabled: true,
      defaultResource(ctx, client, oneOf) {
        if (oneOf) return oneOf;
        const audience = ctx.oidc.route === 'device_authorization' ? ctx.oidc.params.audience : undefined;
        return audience ? `${AUDIENCE_PREFIX}${encodeURIComponent(audience)}` : undefined;
      },
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource) => ({
        scope: '',
        audience: resource.startsWith(AUDIENCE_PREFIX)
          ? decodeURIComponent(resource.slice(AUDIENCE_PREFIX.length))
          : resource,
        accessTokenTTL: TTL.AccessToken,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  // Same rule as oidc-provider's default: a refresh token whenever offline_access is granted
  // and the client may use the refresh_token grant.
  issueRefreshToken(ctx, client, code) {
    return client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access');
  },
  rotateRefreshToken(ctx) {
    if (rotation === 'always') return true;
    if (rotation === 'never') return false;
    const { RefreshToken: refreshToken, Client: client } = ctx.oidc.entities;
    if (client.clientAuthMethod === 'none' && !refreshToken.isSenderConstrained()) return true;
    return refreshToken.ttlPercentagePassed() >= 70;
  },
  ttl: {
    IdToken: TTL.IdToken,
    AccessToken: TTL.AccessToken,
    DeviceCode: TTL.DeviceCode,
    RefreshToken: TTL.RefreshToken,
    Interaction: 3600,
    Session: 14 * 24 * 3600,
    Grant: TTL.RefreshToken,
  },
});

provider.use(async (ctx, next) => {
  const started = Date.now();
  try {
    await next();
    if (deviceInterval !== null && ctx.oidc?.route === 'device_authorization'
        && ctx.status === 200 && ctx.body && typeof ctx.body === 'object') {
      ctx.body.interval = deviceInterval;
    }
  } finally {
    const record = {
      time: new Date(started).toISOString(),
      method: ctx.method,
      path: ctx.path,
      status: ctx.status,
      ms: Date.now() - started,
    };
    if (ctx.oidc?.route) record.route = ctx.oidc.route;
    if (ctx.method === 'POST' && ctx.oidc?.route === 'token') {
      record.grant_type = ctx.oidc.params?.grant_type ?? null;
    }
    if (ctx.status >= 400 && ctx.body && typeof ctx.body === 'object' && ctx.body.error) {
      record.error = ctx.body.error;
    }
    logLine(record);
  }
});

server.on('request', provider.callback());

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

process.stdout.write(`READY ${issuer}\n`);
