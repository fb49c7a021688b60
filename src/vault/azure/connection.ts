/**
 * How the Azure provider reaches a vault: the credential (DefaultAzureCredential as an `az` user expects, or a
 * caller's TokenCredential), an extra trusted CA for a private server ($VHDCRYPT_VAULT_CA; certificate checks
 * stay on), and the bounds on retries and waits that keep a dead vault from holding a command for long.
 */
import { readFileSync } from 'node:fs';
import { Agent } from 'node:https';
import { createSecureContext, rootCertificates, type SecureContext } from 'node:tls';
import type { TokenCredential } from '@azure/identity';
import type { SecretClientOptions } from '@azure/keyvault-secrets';
import { VaultError } from '../errors.js';

/** Retries: 3 tries, 0.5 s then 1 s apart (the SDK's exponential back-off, capped). */
export const RETRY = { maxRetries: 2, retryDelayInMs: 500, maxRetryDelayInMs: 2000 } as const;
/** Each try's limit (connect to last byte); with RETRY a dead or silent vault fails in about 26 s. */
export const TRY_TIMEOUT_MS = 8000;

/**
 * Microsoft's own authority hosts (public, US Government, China). Instance discovery asks one of these about
 * the authority; for any other host (a private token server) it is turned off, since it would call Microsoft.
 */
const MICROSOFT_AUTHORITIES = new Set(['login.microsoftonline.com', 'login.microsoftonline.us', 'login.chinacloudapi.cn', 'login.partner.microsoftonline.cn']);

export interface AzureConnectionOptions {
  /** Any TokenCredential; default DefaultAzureCredential from the environment. */
  readonly credential?: TokenCredential;
  /** PEM of an extra CA to trust; default the file $VHDCRYPT_VAULT_CA names. */
  readonly caPem?: string;
}

/** The policy options every client of one vault shares (the vault's and the credential's pipelines). */
export interface PipelineOptions {
  retryOptions: typeof RETRY;
  additionalPolicies: Array<NonNullable<SecretClientOptions['additionalPolicies']>[number]>;
}

function caPemOf(o: AzureConnectionOptions): string | undefined {
  if (o.caPem !== undefined) return o.caPem;
  const file = process.env.VHDCRYPT_VAULT_CA;
  if (!file) return undefined;
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    throw new VaultError('VAULT_BAD_ARGUMENT', `VHDCRYPT_VAULT_CA: cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? 'error'})`, { cause: e });
  }
}

/**
 * A TLS context trusting Node's root CAs plus `pem`. Node keeps its roots parsed once per process; `ca: [...roots,
 * pem]` would parse ~145 PEM certificates again (~30-50 ms here), and an agent given `ca` joins that whole list
 * into its pool key on every request. Adding the one CA to a default context copies the parsed root store first
 * (Node never changes the shared store), so the result is the same trust. Where that method is missing, the list.
 */
function trustingAlso(pem: string): SecureContext {
  const sc = createSecureContext();
  const native = (sc as { context?: { addCACert?: (pem: string) => void } }).context;
  if (typeof native?.addCACert !== 'function') return createSecureContext({ ca: [...rootCertificates, pem] });
  native.addCACert(pem);
  return sc;
}

/**
 * The pipeline options: each try bounded by TRY_TIMEOUT_MS and, with a CA, sent through an agent that trusts
 * Node's roots plus that CA (verification itself is never relaxed). The bound is our own unref'd timer aborting
 * the try, cleared when it ends (the SDK's request timeout left a timer holding a failed command's process for
 * its full length). One keep-alive agent serves the vault's clients and the credential, so a command makes one
 * TLS handshake.
 */
export function pipelineOptions(o: AzureConnectionOptions): { options: PipelineOptions; agent: Agent | undefined } {
  const pem = caPemOf(o);
  if (pem !== undefined && !pem.includes('-----BEGIN CERTIFICATE-----')) {
    throw new VaultError('VAULT_BAD_ARGUMENT', 'VHDCRYPT_VAULT_CA does not hold a PEM certificate');
  }
  const agent = pem === undefined ? undefined : new Agent({ secureContext: trustingAlso(pem), keepAlive: true });
  return {
    agent,
    options: {
      retryOptions: RETRY,
      additionalPolicies: [{
        position: 'perRetry',
        policy: {
          name: 'vhdcrypt-connection',
          sendRequest: async (req, next) => {
            if (agent) req.agent = agent;
            const given = req.abortSignal;
            const ac = new AbortController();
            const timer = setTimeout(() => ac.abort(new Error(`no answer within ${TRY_TIMEOUT_MS / 1000} s`)), TRY_TIMEOUT_MS);
            timer.unref();
            req.abortSignal = given ? AbortSignal.any([given as AbortSignal, ac.signal]) : ac.signal;
            try {
              return await next(req);
            } finally {
              clearTimeout(timer);
              req.abortSignal = given;
            }
          },
        },
      }],
    },
  };
}

/** True when `host` is not one of Microsoft's authority hosts (so instance discovery must stay off). */
export function isPrivateAuthority(authorityHost: string | undefined): boolean {
  if (!authorityHost) return false;
  try {
    return !MICROSOFT_AUTHORITIES.has(new URL(authorityHost).hostname.toLowerCase());
  } catch {
    throw new VaultError('VAULT_BAD_ARGUMENT', `AZURE_AUTHORITY_HOST is not a URL: ${JSON.stringify(authorityHost.slice(0, 200))}`);
  }
}

/**
 * True when DefaultAzureCredential would get its token from its EnvironmentCredential whatever happens: the
 * environment configures that credential (tenant and client id with a client secret, a certificate, or a user
 * name and password: the variables its constructor reads) and AZURE_TOKEN_CREDENTIALS keeps it first in the
 * chain (unset, `prod` or `EnvironmentCredential`). A configured EnvironmentCredential ends the chain either
 * way: its token is the chain's, and its failure is an AuthenticationError, which ChainedTokenCredential throws
 * on rather than trying the next credential.
 */
export function environmentCredentialDecides(env: NodeJS.ProcessEnv = process.env): boolean {
  const chosen = env.AZURE_TOKEN_CREDENTIALS?.trim().toLowerCase();
  if (chosen && chosen !== 'prod' && chosen !== 'environmentcredential') return false;
  if (!env.AZURE_TENANT_ID || !env.AZURE_CLIENT_ID) return false;
  return Boolean(env.AZURE_CLIENT_SECRET || env.AZURE_CLIENT_CERTIFICATE_PATH || (env.AZURE_USERNAME && env.AZURE_PASSWORD));
}

/**
 * The caller's credential, else DefaultAzureCredential through the same pipeline options (CA, retries). The
 * identity package (the largest of the SDKs to load) loads while the first request goes out: a Key Vault client
 * asks for a token only after the vault's 401 challenge. When the chain's answer is its EnvironmentCredential's
 * (environmentCredentialDecides), that credential is made alone: the same token or the same error, without
 * loading and constructing the rest of the chain (~10 ms to construct, managed identity's MSAL application
 * among it, and its code to load).
 */
export async function credentialOf(o: AzureConnectionOptions, options: PipelineOptions): Promise<TokenCredential> {
  if (o.credential) return o.credential;
  const authorityHost = process.env.AZURE_AUTHORITY_HOST || undefined;
  const disableInstanceDiscovery = isPrivateAuthority(authorityHost);
  const credentialOptions = { ...(options as object), ...(authorityHost ? { authorityHost } : {}), disableInstanceDiscovery };
  const made: Promise<TokenCredential> = environmentCredentialDecides()
    ? import('./environment-credential.js').then(({ EnvironmentCredential }) => new EnvironmentCredential(credentialOptions))
    : import('./default-credential.js').then(({ DefaultAzureCredential }) => new DefaultAzureCredential(credentialOptions));
  // Awaited by getToken; a load failure is reported there, not as an unhandled rejection.
  made.catch(() => undefined);
  return { getToken: async (scopes, opts) => (await made).getToken(scopes, opts) };
}
