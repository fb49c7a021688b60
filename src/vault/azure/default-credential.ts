/** DefaultAzureCredential, loaded only when EnvironmentCredential does not decide alone (see environmentCredentialDecides). */
export { DefaultAzureCredential } from '@azure/identity';
