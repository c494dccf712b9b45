// The INDIGO IAM layer of the test OpenID provider (see provider.mjs's header for what it does
// and what it cannot show). It is Koa middleware that runs in front of oidc-provider's own
// routes, plus the few configuration values and adapter rules IAM's behaviour needs.
//
// The rules below were read from INDIGO IAM's source (iam-login-service v1.12.0 and the MITREid
// Connect fork underneath it); each names the IAM class it follows.

import * as crypto from 'node:crypto';

export const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

// IAM's paths, relative to an issuer that ends with a slash.
export const IAM_ROUTES = {
  authorization: '/authorize',
  code_verification: '/device',
  device_authorization: '/devicecode',
  end_session: '/logout',
  introspection: '/introspect',
  jwks: '/jwk',
  registration: '/iam/api/client-registration',
  revocation: '/revoke',
  token: '/token',
  userinfo: '/userinfo',
};

// Scopes the provider knows. `wlcg`, `iam`, `aarc` and `kc` are IAM's token-profile scopes: a
// client registered with exactly one of them gets that profile (ScopeAwareProfileResolver).
export const IAM_SCOPES = ['openid', 'offline_access', 'profile', 'email', 'address', 'phone',
  'wlcg.groups', 'wlcg', 'iam', 'aarc', 'kc'];
const PROFILE_SCOPES = ['iam', 'wlcg', 'aarc', 'kc'];

// What a request to the layer's test-control path may change about an account.
const ACCOUNT_FLAGS = ['suspended', 'aup_due'];

const MAX_BODY = 56 * 1024;

function b64uJson(value) {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

function payloadOf(jwt) {
  return JSON.parse(Buffer.from(String(jwt).split('.')[1] ?? '', 'base64url').toString('utf8'));
}

function basicUser(ctx) {
  const header = ctx.get('authorization');
  if (!/^basic /i.test(header)) return undefined;
  const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return decodeURIComponent(colon === -1 ? decoded : decoded.slice(0, colon));
}

function splitSpaces(value) {
  return String(value ?? '').split(' ').filter(Boolean);
}

async function readBody(ctx) {
  if (ctx.state.rawBody !== undefined) return ctx.state.rawBody;
  const chunks = [];
  let size = 0;
  await new Promise((resolve, reject) => {
    ctx.req.on('data', (chunk) => {
      size += chunk.length;
      if (size <= MAX_BODY) chunks.push(chunk);
    });
    ctx.req.on('end', resolve);
    ctx.req.on('error', reject);
  });
  ctx.state.rawBody = Buffer.concat(chunks).toString('utf8');
  return ctx.state.rawBody;
}

// oidc-provider reads an already consumed body from req.body (and warns once about it).
function forward(ctx, body) {
  ctx.req.body = body;
}

function answer(ctx, status, body, headers = {}) {
  ctx.status = status;
  for (const [name, value] of Object.entries(headers)) ctx.set(name, value);
  if (body === undefined) {
    ctx.body = ''; // MITREid's HttpCodeView: a status and nothing else
  } else {
    ctx.body = body;
  }
}

function oauthError(ctx, status, error, description, headers) {
  answer(ctx, status, { error, error_description: description }, headers);
}

function isLoopback(uri) {
  try {
    const url = new URL(uri);
    return url.protocol === 'http:' && ['127.0.0.1', '[::1]', 'localhost'].includes(url.hostname);
  } catch {
    return false;
  }
}

export class IamLayer {
  // provider: the oidc-provider instance; issuer: its issuer (with the trailing slash);
  // signingKey: the private RS256 JWK the provider signs with (kid included);
  // claimsFor(login): the account's claims; ttl: {IdToken}; options (see provider.mjs).
  constructor({
    provider, issuer, signingKey, claimsFor, ttl, organisationName, defaultProfile,
    accessTokenIssuer, idTokenAudArray, controlToken, rotation, staticReuse,
  }) {
    this.provider = provider;
    this.issuer = issuer;
    this.kid = signingKey.kid;
    this.key = crypto.createPrivateKey({ key: signingKey, format: 'jwk' });
    this.claimsFor = claimsFor;
    this.ttl = ttl;
    this.organisationName = organisationName;
    this.defaultProfile = defaultProfile;
    this.accessTokenIssuer = accessTokenIssuer;
    this.idTokenAudArray = idTokenAudArray;
    this.controlPath = controlToken ? `/_kubectl-caas-test/${controlToken}/accounts/` : null;
    this.rotation = rotation;
    this.staticReuse = staticReuse; // client id -> reuse_refresh_token of the preconfigured clients
    this.accounts = new Map(); // login -> { suspended, aup_due }
    this.accessTokens = new Map(); // the JWT we hand out -> oidc-provider's opaque access token
    this.deviceResources = new Map(); // device_code -> `resource` of the device request
    this.grantAudience = new Map(); // grant id -> { aud, resource } of the token request that began it
  }

  // -- configuration ----------------------------------------------------------------------------

  // IAM keeps the refresh token unless the client says otherwise (reuseRefreshToken, true for
  // dynamically registered clients); with rotation, the used one is deleted at once.
  rotateRefreshToken(ctx) {
    if (this.rotation === 'always') return true;
    if (this.rotation === 'never') return false;
    const { client } = ctx.oidc;
    const reuse = client.reuse_refresh_token ?? this.staticReuse.get(client.clientId) ?? true;
    return !reuse;
  }

  // Adapter rule for what oidc-provider stores: a refused device code stays pending (IAM's deny
  // button changes nothing about the code, which can even be entered again).
  static sanitize(model, payload) {
    if (model === 'DeviceCode' && payload.error === 'access_denied') {
      delete payload.error;
      delete payload.errorDescription;
      delete payload.inFlight;
    }
    return payload;
  }

  // -- tokens -----------------------------------------------------------------------------------

  sign(payload) {
    const head = b64uJson({ kid: this.kid, alg: 'RS256' });
    const body = b64uJson(payload);
    const signature = crypto.sign('sha256', Buffer.from(`${head}.${body}`), this.key);
    return `${head}.${body}.${signature.toString('base64url')}`;
  }

  profileOf(client) {
    // ScopeAwareProfileResolver: the client's registered scopes name the profile, if exactly one.
    const named = splitSpaces(client.scope).filter((s) => PROFILE_SCOPES.includes(s));
    return named.length === 1 ? named[0] : this.defaultProfile;
  }

  // IamJWTProfileIdTokenCustomizer and WLCGIdTokenCustomizer: claims by granted scope; the WLCG
  // profile drops `groups` and gives `wlcg.groups` (with a leading slash) for a wlcg.groups scope.
  idTokenClaims(client, login, scopes) {
    const account = { ...this.claimsFor(login) };
    // Group membership changed through the test-control path (as an IAM administrator would).
    const changed = this.accounts.get(login)?.groups;
    if (changed) {
      account.groups = changed;
      account['wlcg.groups'] = changed.map((g) => `/${g}`);
    }
    const claims = {};
    if (scopes.has('profile')) {
      claims.name = account.name;
      claims.preferred_username = account.preferred_username;
      claims.organisation_name = this.organisationName;
      claims.groups = account.groups;
    }
    if (scopes.has('email')) claims.email = account.email;
    if (this.profileOf(client) === 'wlcg') {
      delete claims.groups;
      if ([...scopes].some((s) => s === 'wlcg.groups' || s.startsWith('wlcg.groups:'))) {
        claims['wlcg.groups'] = account['wlcg.groups'];
      }
      claims['wlcg.ver'] = '1.0';
    }
    return claims;
  }

  // IamOIDCTokenService.createIdToken: iss, sub, aud, jti, iat, exp (the client's ID-token
  // lifetime), nonce, `kid` repeated in the claims, then the profile's claims. nimbus-jose-jwt
  // writes a one-element audience list as a plain string, so `aud` is "<client_id>" on the wire.
  mintIdToken(client, original, scopes) {
    const { sub, iat, nonce } = payloadOf(original);
    return this.sign({
      iss: this.issuer,
      sub,
      aud: this.idTokenAudArray ? [client.clientId] : client.clientId,
      kid: this.kid,
      iat,
      exp: iat + this.ttl.IdToken,
      jti: crypto.randomUUID(),
      ...(nonce ? { nonce } : {}),
      ...this.idTokenClaims(client, sub, scopes),
    });
  }

  // BaseAccessTokenBuilder: iss (the configured issuer), iat, exp, sub, jti, client_id, and aud
  // only when one was asked for (a space-separated list; one value is written as a string).
  mintAccessToken(client, opaque, sub, expiresIn, aud) {
    const now = Math.floor(Date.now() / 1000);
    const audiences = splitSpaces(aud);
    const jwt = this.sign({
      iss: this.accessTokenIssuer,
      iat: now,
      exp: now + expiresIn,
      sub,
      jti: crypto.randomUUID(),
      client_id: client.clientId,
      ...(audiences.length === 1 ? { aud: audiences[0] } : {}),
      ...(audiences.length > 1 ? { aud: audiences } : {}),
    });
    this.accessTokens.set(jwt, opaque);
    return jwt;
  }

  opaqueFor(token) {
    return this.accessTokens.get(token) ?? token;
  }

  // Rewrite a successful token response: our JWTs in place of oidc-provider's tokens.
  rewriteTokens(ctx, client, aud) {
    const body = ctx.body;
    if (ctx.status !== 200 || !body || typeof body !== 'object' || !body.access_token) return;
    const scopes = new Set(splitSpaces(body.scope));
    // A client-credentials token has no person: IAM puts the client id in sub.
    const sub = ctx.oidc.entities.AccessToken?.accountId
      ?? (ctx.oidc.entities.ClientCredentials ? client.clientId : undefined);
    if (body.id_token) body.id_token = this.mintIdToken(client, body.id_token, scopes);
    body.access_token = this.mintAccessToken(client, body.access_token, sub, body.expires_in, aud);
  }

  // -- audience (IamOAuth2RequestFactory) -------------------------------------------------------

  // The token request's audience: the first non-empty of resource, aud, audience. A `resource`
  // given at the device request (RFC 8707) is kept for the token request and for refreshes; any
  // audience asked for later must then be among those resources (else invalid_target).
  // `audience`/`aud` given at the device request are not kept.
  audienceFor(params, granted) {
    const given = ['resource', 'aud', 'audience'].map((k) => params.get(k)).find((v) => v);
    const hasResource = Boolean(params.get('resource'));
    if (given) {
      if (granted?.resource || hasResource) {
        const allowed = new Set(splitSpaces(granted?.resource));
        const kept = splitSpaces(given).filter((r) => allowed.has(r));
        if (kept.length === 0) return { error: 'The requested resource was not originally granted' };
        return { aud: kept.join(' '), resource: granted?.resource ?? null };
      }
      return { aud: given, resource: null };
    }
    if (granted?.resource) return { aud: granted.resource, resource: granted.resource };
    return { aud: granted?.aud ?? null, resource: null };
  }

  // -- the middleware ---------------------------------------------------------------------------

  middleware() {
    return async (ctx, next) => {
      const path = ctx.path;
      if (this.controlPath && path.startsWith(this.controlPath)) {
        ctx.state.unlogged = true; // the tests' own control requests are not the client's
        return this.control(ctx);
      }
      if (ctx.method === 'POST') {
        switch (path) {
          case IAM_ROUTES.device_authorization: return this.deviceAuthorization(ctx, next);
          case IAM_ROUTES.token: return this.token(ctx, next);
          case IAM_ROUTES.revocation: return this.revocation(ctx, next);
          case IAM_ROUTES.introspection: return this.introspection(ctx, next);
          case IAM_ROUTES.registration: return this.registration(ctx, next);
          default: break;
        }
      }
      if (path === IAM_ROUTES.userinfo) {
        const header = ctx.get('authorization');
        if (/^bearer /i.test(header)) {
          ctx.req.headers.authorization = `Bearer ${this.opaqueFor(header.slice(7).trim())}`;
        }
      }
      return next();
    };
  }

  // Test control: POST <controlPath><login> with JSON {suspended?: bool, aup_due?: bool,
  // groups?: [string]} (groups: the account's new memberships, in tokens minted from now on);
  // GET answers the account's flags.
  async control(ctx) {
    const login = decodeURIComponent(ctx.path.slice(this.controlPath.length));
    if (!login) return answer(ctx, 404, { error: 'no login' });
    const flags = this.accounts.get(login) ?? { suspended: false, aup_due: false };
    if (ctx.method === 'POST') {
      let changes;
      try {
        changes = JSON.parse(await readBody(ctx) || '{}');
      } catch {
        return answer(ctx, 400, { error: 'body must be JSON' });
      }
      for (const [name, value] of Object.entries(changes)) {
        const isGroups = name === 'groups' && Array.isArray(value) && value.every((g) => typeof g === 'string');
        if (!isGroups && (!ACCOUNT_FLAGS.includes(name) || typeof value !== 'boolean')) {
          return answer(ctx, 400, { error: `unknown flag or not a boolean: ${name}` });
        }
        flags[name] = value;
      }
      this.accounts.set(login, flags);
    }
    return answer(ctx, 200, { login, ...flags });
  }

  // IamDeviceEndpointController.requestDeviceCode. No client authentication at all: the client
  // is the `client_id` form field (HTTP Basic is ignored); a blank one is 400 with no body, an
  // unknown one 404 with no body; then the device grant, then the scopes.
  async deviceAuthorization(ctx, next) {
    ctx.state.route = 'device_authorization';
    const form = new URLSearchParams(await readBody(ctx));
    ctx.state.form = form;
    const clientId = form.get('client_id');
    if (!clientId || !clientId.trim()) return answer(ctx, 400);
    const client = await this.provider.Client.find(clientId);
    if (!client) return answer(ctx, 404);
    if (client.grantTypes?.length && !client.grantTypes.includes(DEVICE_GRANT)) {
      return oauthError(ctx, 401, 'invalid_client', `Unauthorized grant type: ${DEVICE_GRANT}`);
    }
    const allowed = new Set(splitSpaces(client.scope));
    const requested = splitSpaces(form.get('scope'));
    if (requested.some((s) => !allowed.has(s))) {
      return oauthError(ctx, 400, 'invalid_scope', `One or more requested scope is not allowed for client '${clientId}'`);
    }
    // Hand oidc-provider the request as its own client authentication wants it.
    const onward = new URLSearchParams({ client_id: clientId });
    if (requested.length) onward.set('scope', requested.join(' '));
    delete ctx.req.headers.authorization;
    if (client.clientAuthMethod === 'client_secret_basic') {
      const pair = `${encodeURIComponent(clientId)}:${encodeURIComponent(client.clientSecret)}`;
      ctx.req.headers.authorization = `Basic ${Buffer.from(pair).toString('base64')}`;
    } else if (client.clientAuthMethod === 'client_secret_post') {
      onward.set('client_secret', client.clientSecret);
    }
    forward(ctx, onward.toString());
    await next();
    if (ctx.status === 200 && ctx.body && typeof ctx.body === 'object') {
      delete ctx.body.interval; // IAM sends none (provider.mjs may add one on request)
      if (form.get('resource')) this.deviceResources.set(ctx.body.device_code, form.get('resource'));
    }
    return undefined;
  }

  async token(ctx, next) {
    const form = new URLSearchParams(await readBody(ctx));
    ctx.state.form = form;
    const grantType = form.get('grant_type');
    const callerId = form.get('client_id') || basicUser(ctx);
    const client = callerId ? await this.provider.Client.find(callerId) : undefined;
    const onward = new URLSearchParams(form);
    for (const name of ['resource', 'aud', 'audience']) onward.delete(name);

    if (grantType === DEVICE_GRANT) {
      const code = await this.provider.DeviceCode.find(form.get('device_code') ?? '', { ignoreExpiration: true });
      let audience = { aud: null, resource: null };
      if (code && code.accountId && !code.isExpired) {
        audience = this.audienceFor(form, { resource: this.deviceResources.get(form.get('device_code')) });
        if (audience.error) return oauthError(ctx, 400, 'invalid_target', audience.error);
      }
      forward(ctx, onward.toString());
      await next();
      const error = ctx.body?.error;
      if (error === 'expired_token' && code) {
        // IamDeviceCodeTokenGranter: an expired code is cleared as it is reported.
        await code.destroy();
        this.deviceResources.delete(form.get('device_code'));
      }
      if (ctx.status === 200 && client) {
        const grantId = ctx.oidc.entities.DeviceCode?.grantId ?? code?.grantId;
        if (grantId) this.grantAudience.set(grantId, { aud: audience.aud, resource: audience.resource });
        this.deviceResources.delete(form.get('device_code'));
        this.rewriteTokens(ctx, client, audience.aud);
      }
      return undefined;
    }

    if (grantType === 'refresh_token') {
      const value = form.get('refresh_token') ?? '';
      const refreshToken = await this.provider.RefreshToken.find(value, { ignoreExpiration: true });
      // DefaultOAuth2ProviderTokenService.getRefreshToken / refreshAccessToken.
      if (!refreshToken) return oauthError(ctx, 401, 'invalid_token', `Invalid refresh token: ${value}`);
      if (client && refreshToken.clientId !== client.clientId) {
        await refreshToken.destroy();
        return oauthError(ctx, 401, 'invalid_client', 'Client does not own the presented refresh token');
      }
      // IamRefreshTokenGranter: the account must be active and must not owe an AUP signature.
      const flags = this.accounts.get(refreshToken.accountId) ?? {};
      if (flags.suspended) {
        return oauthError(ctx, 401, 'unauthorized', `User ${refreshToken.accountId} is not active.`);
      }
      if (flags.aup_due) {
        return oauthError(ctx, 400, 'invalid_grant',
          `User ${refreshToken.accountId} needs to sign AUP for this organization in order to proceed.`);
      }
      if (refreshToken.isExpired) {
        await refreshToken.destroy();
        return oauthError(ctx, 401, 'invalid_token', `Expired refresh token: ${value}`);
      }
      const audience = this.audienceFor(form, this.grantAudience.get(refreshToken.grantId));
      if (audience.error) return oauthError(ctx, 400, 'invalid_target', audience.error);
      forward(ctx, onward.toString());
      await next();
      if (ctx.status === 200 && client) this.rewriteTokens(ctx, client, audience.aud);
      return undefined;
    }

    forward(ctx, onward.toString());
    await next();
    const given = ['resource', 'aud', 'audience'].map((k) => form.get(k)).find((v) => v);
    if (ctx.status === 200 && client) this.rewriteTokens(ctx, client, given ?? null);
    return undefined;
  }

  // The revocation endpoint (MitreSecurityConfig: client_id/client_secret form fields or HTTP
  // Basic; without either, Spring's entry point answers 401 `unauthorized`).
  // token_type_hint is ignored; a token the provider does not know still gets 200.
  async revocation(ctx, next) {
    const form = new URLSearchParams(await readBody(ctx));
    ctx.state.form = form;
    if (!form.get('client_id') && !basicUser(ctx)) {
      return oauthError(ctx, 401, 'unauthorized', 'Full authentication is required to access this resource',
        { 'WWW-Authenticate': 'Bearer realm="oauth", error="unauthorized"' });
    }
    const onward = new URLSearchParams(form);
    onward.delete('token_type_hint');
    if (onward.get('client_secret') === '') onward.delete('client_secret');
    if (this.accessTokens.has(onward.get('token'))) {
      // IAM deletes just that access token; oidc-provider would revoke the whole grant with it
      // (the adapter skips grant revocation for this request).
      ctx.state.accessTokenOnly = true;
      onward.set('token', this.opaqueFor(onward.get('token')));
    }
    forward(ctx, onward.toString());
    return next();
  }

  // The introspection endpoint takes HTTP Basic only.
  async introspection(ctx, next) {
    const form = new URLSearchParams(await readBody(ctx));
    ctx.state.form = form;
    if (!basicUser(ctx)) {
      return oauthError(ctx, 401, 'unauthorized', 'Full authentication is required to access this resource',
        { 'WWW-Authenticate': 'Basic realm="oauth", error="unauthorized"' });
    }
    const onward = new URLSearchParams(form);
    if (onward.get('token')) onward.set('token', this.opaqueFor(onward.get('token')));
    forward(ctx, onward.toString());
    return next();
  }

  // Dynamic client registration, open to anyone (DefaultClientRegistrationService and
  // ClientConverter.entityFromRegistrationRequest): a name and a grant type are required;
  // offline_access in the scopes adds the refresh_token grant; no scopes gives the default ones;
  // password, token exchange and client credentials are refused to anonymous callers; such
  // clients always keep (reuse) their refresh tokens.
  async registration(ctx, next) {
    ctx.state.route = 'registration';
    let request;
    try {
      request = JSON.parse(await readBody(ctx));
    } catch {
      return answer(ctx, 400, { error: 'the request body is not JSON' });
    }
    if (!request || typeof request !== 'object' || Array.isArray(request)) {
      return answer(ctx, 400, { error: 'the request body is not a JSON object' });
    }
    if (typeof request.client_name !== 'string' || !request.client_name.trim()) {
      return answer(ctx, 400, { error: 'registerClient.request.clientName: must not be blank' });
    }
    const grants = Array.isArray(request.grant_types) ? [...request.grant_types] : [];
    if (grants.length === 0) return answer(ctx, 400, { error: 'Invalid client: empty grant type' });
    const refused = grants.find((g) => ['password', 'urn:ietf:params:oauth:grant-type:token-exchange',
      'client_credentials'].includes(g));
    if (refused) return answer(ctx, 400, { error: `Grant type not allowed: ${refused}` });
    const scopes = splitSpaces(request.scope);
    if (scopes.length === 0) scopes.push('openid', 'profile', 'email');
    if (scopes.includes('offline_access') && !grants.includes('refresh_token')) grants.push('refresh_token');
    const metadata = {
      ...request,
      grant_types: grants,
      scope: scopes.join(' '),
      reuse_refresh_token: true,
    };
    delete metadata.client_id;
    if (!Array.isArray(request.response_types)) {
      metadata.response_types = grants.includes('authorization_code') ? ['code'] : [];
    }
    if (!Array.isArray(request.redirect_uris)) metadata.redirect_uris = [];
    if (!request.application_type && metadata.redirect_uris.length
        && metadata.redirect_uris.every(isLoopback)) {
      metadata.application_type = 'native';
    }
    forward(ctx, JSON.stringify(metadata));
    await next();
    if (ctx.status === 201 && ctx.body && typeof ctx.body === 'object') {
      ctx.body.dynamically_registered = true;
    }
    return undefined;
  }
}
