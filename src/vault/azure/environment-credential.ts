/**
 * EnvironmentCredential alone, in a module of its own so that the CLI bundle puts what it needs (the client
 * secret, certificate and username credentials, MSAL) in a chunk apart from the rest of DefaultAzureCredential's
 * chain (workload and managed identity, the developer tools' credentials). See environmentCredentialDecides.
 */
export { EnvironmentCredential } from '@azure/identity';
