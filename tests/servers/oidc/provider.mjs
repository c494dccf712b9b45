// A real OpenID provider (oidc-provider 9) for kubectl-caas tests, benchmarks and the demo.
//
// Two modes (--mode):
//
// iam (the default) behaves, at the protocol level, like INDIGO IAM (iam-login-service 1.12,
// MITREid Connect underneath), by oidc-provider's configuration where it can and by a thin Koa
// layer in front of its routes (iam.mjs) where it cannot:
//   - issuer with a trailing slash ("https://127.0.0.1:<port>/"), also in every token's iss;
//     IAM's paths: /devicecode, /token, /revoke, /introspect, /jwk, /userinfo, /authorize, the
//     device page at <issuer>device, registration at /iam/api/client-registration.  [config]
//   - /devicecode authenticates no client: the client is the `client_id` form field and HTTP
//     Basic is ignored, so a confidential client that sends only Basic gets 400 with an empty
//     body (IAM: a required request parameter is missing, Spring answers 400, no OAuth error);
//     blank client_id 400, no body; unknown client_id 404, no body; a client without the device
//     grant 401 invalid_client "Unauthorized grant type: ..."; a scope the client is not
//     registered for 400 invalid_scope. The answer has no `interval`.  [layer]
//   - polling: authorization_pending (400); expired_token once, then the code is gone and polls
//     get invalid_grant; a used code is gone too (invalid_grant, nothing revoked); never
//     slow_down; never access_denied: "Abort"/"Cancel" leave the code pending (it can even be
//     entered again) until it expires.  [layer + adapter]
//   - ID tokens re-minted the way IAM builds them: iss, sub, aud, kid, iat, exp (--id-token-ttl,
//     600), jti, nonce; with `profile`: name, preferred_username, organisation_name, groups; with
//     `email`: email. A client registered with the scope `wlcg` (one of IAM's profile scopes;
//     --default-profile sets the server-wide one) gets the WLCG profile: no `groups`,
//     `wlcg.groups` (leading slashes) when a wlcg.groups scope is granted, `wlcg.ver` "1.0".
//     `aud` is the client id as a string: IAM sets a one-element list, and nimbus-jose-jwt writes
//     a one-element audience as a plain string; --id-token-aud array sends ["<client_id>"].  [layer]
//   - access tokens are always RS256 JWTs (iss, iat, exp, sub, jti, client_id, and aud only when
//     one was asked for); the layer keeps each one's oidc-provider (opaque) token and translates
//     at /userinfo, /introspect and /revoke. Their iss is the issuer, or without the trailing
//     slash with --access-token-iss no-slash (IAM issue #1118).  [layer]
//   - audience: the first non-empty of resource, aud, audience on the TOKEN request (device code
//     and refresh); a refresh without one keeps the audience of the token request that began
//     the grant. `audience`/`aud` on the device request are dropped; an RFC 8707 `resource` there
//     is kept and bounds later requests (else 400 invalid_target), as IAM 1.12 does.  [layer]
//   - refresh tokens only with offline_access granted; rotation per client (reuse_refresh_token:
//     the preconfigured clients rotate, dynamically registered ones keep theirs; a rotated one is
//     deleted at once, without revoking the grant); absolute lifetime (--refresh-token-ttl).
//     Errors: unknown, used or expired refresh token 401 invalid_token; another client's 401
//     invalid_client (and the token is deleted); suspended account 401 `unauthorized`; AUP to
//     sign 400 invalid_grant. Accounts are flagged through the test-control path (below).  [layer]
//   - revocation needs client authentication (client_id in the form or HTTP Basic; without
//     either 401 `unauthorized`); token_type_hint ignored; an unknown token 200. Introspection
//     takes HTTP Basic only.  [layer]
//   - dynamic registration open to anyone (RFC 7591, and RFC 7592 read/update/delete with the
//     registration access token): client_name and grant_types required, offline_access adds the
//     refresh_token grant, no scope gives "openid profile email", password/token exchange/client
//     credentials refused.  [config + layer]
// What this provider cannot show of IAM: IAM's own pages (sign-in first, then the code, then an
// approval page; here it is oidc-provider's code page, then its devInteractions sign-in and
// consent); IAM's user-code format; scope policies and structured-scope matching (scopes are
// compared as plain strings); registrations may only name the scopes listed in IAM_SCOPES
// (IAM keeps any); the exact bodies of IAM's non-OAuth errors (here: empty, or {"error": ...}
// for registration); introspection and userinfo answers are oidc-provider's; a suspended account
// can still sign in on the device page (IAM would refuse the sign-in).
//
// generic keeps plain oidc-provider behaviour, for tests of non-IAM issuers: issuer without a
// trailing slash unless --trailing-slash true, oidc-provider's paths (/device/auth, /token,
// /token/revocation, /token/introspection, /jwks, /me), its client authentication everywhere,
// access_denied after a refusal, expired_token for as long as an expired code is kept, opaque
// access tokens unless `audience=<any string>` on the device request or RFC 8707 `resource=<URI>`
// asks for a JWT with that aud (kept for the poll and refreshes), ID tokens as oidc-provider
// makes them (aud a string), and --rotate-refresh-tokens auto meaning oidc-provider's rule (a
// public client gets a new one at every refresh; reusing a spent one revokes the whole grant).
//
// Options come from the command line (--name value) or, failing that, the environment
// (OIDC_NAME, upper case, dashes as underscores). See `node provider.mjs --help`.
//
// Clients (C is --client-id): C, public (device_code + refresh_token, and authorization_code
// with PKCE to http://127.0.0.1:<any port>/callback; scopes openid profile email offline_access
// wlcg.groups). In iam mode also: C-confidential (secret
// C-confidential-secret, client_secret_basic, same grants and scopes), C-nodevice (public,
// authorization_code + refresh_token, loopback redirect URI), C-nooffline (public, device_code +
// refresh_token, scopes without offline_access), C-wlcg (public, like C plus the `wlcg` scope: the
// WLCG profile), C-service (secret C-service-secret: client_credentials only; its access tokens'
// sub is the client id, as at IAM). Both modes: the confidential resource-server client --rs-client-id for
// introspection.
// Accounts: any login name is an account; sub = login name; groups = ["users", "<login>-group"],
// wlcg.groups the same with leading slashes, unless an --accounts JSON file
// ({"<login>": {claim: value, ...}}) overrides claims. In iam mode, POST
// /_kubectl-caas-test/<--control-token>/accounts/<login> with JSON {"suspended": bool,
// "aup_due": bool} flags an account (GET reads the flags).
//
// --rotate-refresh-tokens auto (default: see above, per mode), always, or never.
// --device-interval N adds `interval` to device answers (neither IAM nor oidc-provider sends one).
//
// Prints `READY <issuer>` on stdout once it serves. With --log FILE, one JSON line per request
// ({time, method, path, status, ms, route, grant_type for POST /token, error}) is written before
// the answer leaves. SIGTERM/SIGINT: close the server and exit 0.

import * as fs from 'node:fs';
import * as https from 'node:https';
import * as crypto from 'node:crypto';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

import {
  DEVICE_GRANT, IAM_ROUTES, IAM_SCOPES, IamLayer,
} from './iam.mjs';

const OPTIONS = {
  mode: { type: 'string', default: 'iam' }, // iam or generic
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
  // auto: per mode (see the header); always; never
  'rotate-refresh-tokens': { type: 'string', default: 'auto' },
  // issuer "https://host:port/" like IAM; default: true in iam mode, false in generic mode
  'trailing-slash': { type: 'string', default: '' },
  // IAM sends no `interval` in the device response, and neither does oidc-provider; a value
  // here adds one (seconds), for tests that want a client to poll faster than the 5 s default.
  'device-interval': { type: 'string', default: '' },
  accounts: { type: 'string' },
  // iam mode only
  'organisation-name': { type: 'string', default: 'indigo-dc' },
  'default-profile': { type: 'string', default: 'iam' }, // iam or wlcg
  'access-token-iss': { type: 'string', default: 'issuer' }, // issuer or no-slash
  'id-token-aud': { type: 'string', default: 'string' }, // string or array
  'control-token': { type: 'string', default: '' },
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

function fail(message) {
  process.stderr.write(`provider.mjs: ${message}\n`);
  process.exit(2);
}

for (const required of ['cert', 'key']) {
  if (!opts[required]) fail(`--${required} (or OIDC_${required.toUpperCase()}) is required`);
}

function seconds(name) {
  const value = Number(opts[name]);
  if (!Number.isInteger(value) || value <= 0) fail(`--${name} must be a positive integer, got ${opts[name]}`);
  return value;
}

function oneOf(name, choices) {
  if (!choices.includes(opts[name])) fail(`--${name} must be one of ${choices.join(', ')}, got ${opts[name]}`);
  return opts[name];
}

const iamMode = oneOf('mode', ['iam', 'generic']) === 'iam';
const TTL = {
  IdToken: seconds('id-token-ttl'),
  AccessToken: seconds('access-token-ttl'),
  DeviceCode: seconds('device-code-ttl'),
  RefreshToken: seconds('refresh-token-ttl'),
};
const deviceInterval = opts['device-interval'] === '' ? null : seconds('device-interval');
const accountOverrides = opts.accounts ? JSON.parse(fs.readFileSync(opts.accounts, 'utf8')) : {};
const rotation = oneOf('rotate-refresh-tokens', ['auto', 'always', 'never']);
oneOf('default-profile', ['iam', 'wlcg']);
oneOf('access-token-iss', ['issuer', 'no-slash']);
oneOf('id-token-aud', ['string', 'array']);
const slashOption = String(opts['trailing-slash']).toLowerCase();
const trailingSlash = slashOption === '' ? iamMode : ['1', 'true', 'yes'].includes(slashOption);

// Request log: one JSON line per HTTP request, written synchronously before the response goes
// out, so a test that has its answer can already count the line.
const logFd = opts.log ? fs.openSync(opts.log, 'a') : null;
function logLine(record) {
  if (logFd !== null) fs.writeSync(logFd, `${JSON.stringify(record)}\n`);
}

// In-memory storage that, unlike the bundled one, keeps expired entries for a while: the bundled
// adapter forgets a device code at expiry (+ clock tolerance), after which polls answer
// invalid_grant instead of expired_token. The models still check expiry themselves.
// In iam mode a consumed entry (a used device code, a rotated refresh token) is deleted, as
// IAM deletes them, instead of being kept as "consumed" (whose reuse oidc-provider punishes by
// revoking the grant), and a refused device code stays pending (IamLayer.sanitize).
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
    if (iamMode) IamLayer.sanitize(this.model, payload);
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
    if (iamMode) {
      store.delete(this.key(id));
      return;
    }
    const payload = this.get(this.key(id));
    if (payload) payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) { store.delete(this.key(id)); }

  async revokeByGrantId(grantId) {
    if (iamMode && Provider.ctx?.state?.accessTokenOnly) return;
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
    ...(iamMode ? { organisation_name: opts['organisation-name'] } : {}),
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
const issuer = `https://${hostForUrl}:${port}${trailingSlash ? '/' : ''}`;

// A fresh RS256 signing key at every start (the bundled development keys never change, and
// consumers must fetch the JWKS at run time anyway).
const signingKey = {
  ...crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' }),
  kid: crypto.randomBytes(8).toString('hex'),
  use: 'sig',
  alg: 'RS256',
};
const jwks = { keys: [signingKey] };

const clientId = opts['client-id'];
const publicDeviceClient = (id, scope, extra = {}) => ({
  client_id: id,
  client_name: `kubectl-caas (test: ${id})`,
  token_endpoint_auth_method: 'none',
  grant_types: [DEVICE_GRANT, 'refresh_token'],
  response_types: [],
  redirect_uris: [],
  ...(scope ? { scope } : {}),
  ...extra,
});
const rsClient = {
  // Confidential "resource server" client: a public client may only introspect its own
  // tokens, and tests want to introspect any of them.
  client_id: opts['rs-client-id'],
  client_secret: opts['rs-client-secret'],
  token_endpoint_auth_method: 'client_secret_basic',
  grant_types: [],
  response_types: [],
  redirect_uris: [],
};
// The main public client also signs in through a browser (authorization code with PKCE and a
// loopback redirect, RFC 8252), as kubectl-iam does on a desktop: registered, as at IAM, with a
// loopback redirect URI; as a native client, oidc-provider lets it use that URI on any port.
const browserSignIn = {
  application_type: 'native',
  grant_types: [DEVICE_GRANT, 'refresh_token', 'authorization_code'],
  response_types: ['code'],
  redirect_uris: ['http://127.0.0.1/callback'],
};
const IAM_CLIENT_SCOPE = 'openid profile email offline_access wlcg.groups';
const clients = iamMode
  ? [
    publicDeviceClient(clientId, IAM_CLIENT_SCOPE, browserSignIn),
    publicDeviceClient(`${clientId}-confidential`, IAM_CLIENT_SCOPE, {
      client_secret: `${clientId}-confidential-secret`,
      token_endpoint_auth_method: 'client_secret_basic',
    }),
    {
      client_id: `${clientId}-nodevice`,
      client_name: 'kubectl-caas (test: no device grant)',
      token_endpoint_auth_method: 'none',
      application_type: 'native',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: ['http://127.0.0.1/callback'],
      scope: 'openid profile email offline_access',
    },
    publicDeviceClient(`${clientId}-nooffline`, 'openid profile email wlcg.groups'),
    {
      // A service account: client credentials only (IAM clients can have that grant).
      client_id: `${clientId}-service`,
      client_secret: `${clientId}-service-secret`,
      client_name: 'kubectl-caas (test: service account)',
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      scope: 'profile email',
    },
    publicDeviceClient(`${clientId}-wlcg`, `${IAM_CLIENT_SCOPE} wlcg`),
    { ...rsClient, scope: IAM_CLIENT_SCOPE },
  ]
  : [publicDeviceClient(clientId, undefined, browserSignIn), rsClient];
// reuse_refresh_token of the preconfigured clients in iam mode: they rotate.
const staticReuse = new Map(clients.map((c) => [c.client_id, false]));

const AUDIENCE_PREFIX = 'urn:kubectl-caas-test:audience:';
const genericFeatures = {
  // RFC 8707 `resource` (an absolute URI): the access token becomes a JWT with aud = resource.
  // An `audience` parameter (any string) on the device request is mapped onto a resource whose
  // JWT access tokens carry aud = that string; the audience granted at the device request is
  // kept for the poll and refreshes (an `audience` sent there is ignored).
  resourceIndicators: {
    enabled: true,
    defaultResource(ctx, client, oneOfResources) {
      if (oneOfResources) return oneOfResources;
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
};
const iamFeatures = {
  clientCredentials: { enabled: true },
  registration: { enabled: true, initialAccessToken: false, issueRegistrationAccessToken: true },
  registrationManagement: { enabled: true, rotateRegistrationAccessToken: false },
};

let layer = null;
const provider = new Provider(issuer, {
  adapter: TestAdapter,
  jwks,
  clients,
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  scopes: iamMode ? IAM_SCOPES : ['openid', 'offline_access', 'profile', 'email', 'wlcg.groups'],
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name', 'groups', ...(iamMode ? ['organisation_name'] : [])],
    email: ['email', 'email_verified'],
    'wlcg.groups': ['wlcg.groups'],
  },
  conformIdTokenClaims: false,
  extraParams: iamMode ? [] : ['audience'],
  ...(iamMode ? {
    routes: IAM_ROUTES,
    extraClientMetadata: {
      properties: ['reuse_refresh_token'],
      validator(ctx, key, value) {
        if (value !== undefined && typeof value !== 'boolean') throw new TypeError(`${key} must be a boolean`);
      },
    },
  } : {}),
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
    ...(iamMode ? iamFeatures : genericFeatures),
  },
  // Same rule as oidc-provider's default (and IAM's): a refresh token whenever offline_access
  // is granted and the client may use the refresh_token grant.
  issueRefreshToken(ctx, client, code) {
    return client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access');
  },
  rotateRefreshToken(ctx) {
    if (layer) return layer.rotateRefreshToken(ctx);
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

// The request log wraps everything, the IAM layer included.
provider.use(async (ctx, next) => {
  const started = Date.now();
  try {
    await next();
    if (deviceInterval !== null && (ctx.oidc?.route ?? ctx.state.route) === 'device_authorization'
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
    const tokenPath = iamMode ? IAM_ROUTES.token : '/token';
    const route = ctx.oidc?.route ?? ctx.state.route ?? (ctx.path === tokenPath ? 'token' : undefined);
    if (route) record.route = route;
    if (ctx.method === 'POST' && route === 'token') {
      record.grant_type = ctx.oidc?.params?.grant_type ?? ctx.state.form?.get('grant_type') ?? null;
    }
    if (ctx.status >= 400 && ctx.body && typeof ctx.body === 'object' && ctx.body.error) {
      record.error = ctx.body.error;
    }
    if (!ctx.state.unlogged) logLine(record);
  }
});

if (iamMode) {
  layer = new IamLayer({
    provider,
    issuer,
    signingKey,
    claimsFor,
    ttl: TTL,
    organisationName: opts['organisation-name'],
    defaultProfile: opts['default-profile'],
    accessTokenIssuer: opts['access-token-iss'] === 'no-slash' ? issuer.replace(/\/+$/, '') : issuer,
    idTokenAudArray: opts['id-token-aud'] === 'array',
    controlToken: opts['control-token'],
    rotation,
    staticReuse,
  });
  provider.use(layer.middleware());
}

server.on('request', provider.callback());

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

process.stdout.write(`READY ${issuer}\n`);
