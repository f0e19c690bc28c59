'use strict';
// `installationStore` for @slack/bolt / @slack/oauth backed by tokenkeep.
//
// `storeInstallation` hands what Bolt's own OAuth flow produced to tokenkeep,
// which asks Slack (`auth.test`) whose token it is and seals it.
// `fetchInstallation` returns metadata to any caller and tokens only to callers
// holding the named-tenant permission (workers, cron jobs: `namedTenant: true`);
// refresh tokens never leave tokenkeep, so nothing on the Bolt side can rotate.
// `deleteInstallation` needs the named-tenant permission too.

function toWire(i) {
  const wire = {
    app_id: i.appId ?? null,
    enterprise_id: i.enterprise ? i.enterprise.id : null,
    enterprise_name: i.enterprise ? i.enterprise.name ?? null : null,
    enterprise_url: i.enterpriseUrl ?? null,
    team_id: i.team ? i.team.id : null,
    team_name: i.team ? i.team.name ?? null : null,
    is_enterprise_install: Boolean(i.isEnterpriseInstall),
    token_type: i.tokenType ?? null,
  };
  if (i.bot && i.bot.token) {
    wire.bot = {
      token: i.bot.token,
      refresh_token: i.bot.refreshToken ?? null,
      expires_at: i.bot.expiresAt ?? null,
      scopes: i.bot.scopes ?? [],
      id: i.bot.id ?? null,
      user_id: i.bot.userId ?? null,
    };
  }
  if (i.user && i.user.id) {
    wire.user = {
      id: i.user.id,
      token: i.user.token ?? null,
      refresh_token: i.user.refreshToken ?? null,
      expires_at: i.user.expiresAt ?? null,
      scopes: i.user.scopes ?? [],
    };
  }
  if (i.incomingWebhook && i.incomingWebhook.url) {
    wire.incoming_webhook = {
      url: i.incomingWebhook.url,
      channel: i.incomingWebhook.channel ?? null,
      channel_id: i.incomingWebhook.channelId ?? null,
      configuration_url: i.incomingWebhook.configurationUrl ?? null,
    };
  }
  return wire;
}

function fromWire(found) {
  const isUser = found.kind === 'user';
  const installation = {
    appId: found.app_id ?? undefined,
    team: found.team_id ? { id: found.team_id, name: found.team_name ?? undefined } : undefined,
    enterprise: found.enterprise_id ? { id: found.enterprise_id, name: found.enterprise_name ?? undefined } : undefined,
    enterpriseUrl: found.enterprise_url ?? undefined,
    isEnterpriseInstall: Boolean(found.is_enterprise_install),
    tokenType: isUser ? 'user' : 'bot',
    authVersion: 'v2',
    user: { id: isUser ? found.user_id : found.installer_user_id ?? undefined, token: undefined, scopes: undefined },
  };
  if (isUser) {
    installation.user = { id: found.user_id, token: found.token, scopes: found.user_scopes, expiresAt: found.token_expires_at ?? undefined };
  } else {
    installation.bot = {
      id: found.bot_id ?? undefined,
      userId: found.bot_user_id ?? undefined,
      scopes: found.bot_scopes ?? [],
      token: found.token,
      expiresAt: found.token_expires_at ?? undefined,
    };
  }
  return installation;
}

/** @param {import('./client').TokenkeepClient} client */
function tokenkeepInstallationStore(client, { namedTenant = false } = {}) {
  const query = (q) => ({
    enterprise_id: q.enterpriseId ?? null,
    team_id: q.teamId ?? null,
    is_enterprise_install: Boolean(q.isEnterpriseInstall),
    user_id: q.userId ?? null,
  });
  return {
    async storeInstallation(installation) {
      await client.storeInstallation(toWire(installation));
    },
    // Throws when there is none, which is how @slack/oauth stores say "no installation".
    async fetchInstallation(installQuery) {
      const found = await client.findInstallation({ ...query(installQuery), include_tokens: namedTenant });
      return fromWire(found);
    },
    async deleteInstallation(installQuery) {
      const q = query(installQuery);
      await client.delete({ ...q, scope: q.user_id ? 'user' : 'all' });
    },
  };
}

module.exports = { tokenkeepInstallationStore, toWire };
