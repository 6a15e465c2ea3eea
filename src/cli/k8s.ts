/**
 * `tessera k8s webhook`: the Kubernetes mutating admission webhook (src/k8s). It runs with its own
 * agent (the serving certificate is its SVID, which carries the Service's DNS name) and a scoped
 * admin credential (--admin-dir) to create entries and one-time join tokens for the pods it admits.
 */
import type { Command } from 'commander';
import { Option } from 'commander';
import { adminClient } from '../admin/clients.js';
import { parseDuration } from '../core/duration.js';
import { TesseraError } from '../core/errors.js';
import { createLogger } from '../core/log.js';
import { DNS_LABEL, DNS_SUBDOMAIN } from '../k8s/admission.js';
import { checkKubeCredentials, DEFAULT_WEBHOOK_CONFIGURATION, IN_CLUSTER_CREDENTIALS_DIR, kubeApiUrl } from '../k8s/cabundle.js';
import { loadClientCa, parseClientNames } from '../k8s/client-auth.js';
import { checkIdTemplate, parseAttributeRule, type InjectConfig } from '../k8s/inject.js';
import { count, type Run } from './context.js';

type Json = Record<string, unknown>;

function collect(v: string, prev: string[] = []): string[] {
  return [...prev, v];
}

/** `--namespaces a,b,c`: namespace names (no wildcard: the webhook owns only the namespaces named). */
export function parseNamespaces(v: string): Set<string> {
  const names = v.split(',').map((s) => s.trim()).filter((s) => s !== '');
  const bad = names.find((n) => !DNS_LABEL.test(n));
  if (names.length === 0 || bad !== undefined) throw new TesseraError('TESSERA_CONFIG_INVALID', `--namespaces must list namespace names, comma-separated${bad !== undefined ? ` (${JSON.stringify(bad).slice(0, 70)} is not one)` : ''}`);
  return new Set(names);
}

/** `--patch-ca-bundle[=true|false]` (the chart renders the value; `--no-patch-ca-bundle` is the same as `=false`). */
export function parseOnOff(v: string): boolean {
  if (v === 'true') return true;
  if (v === 'false') return false;
  throw new TesseraError('TESSERA_CONFIG_INVALID', '--patch-ca-bundle takes true or false (or use --no-patch-ca-bundle)');
}

export function k8sCommands(program: Command, run: Run, parseListen: (v: string) => { host: string; port: number }, untilSignal: (stop: () => Promise<void>) => Promise<void>): void {
  const k8s = program.command('k8s').description('Kubernetes: the admission webhook that gives pods identities');
  k8s.command('webhook').description('run the mutating admission webhook: injects the agent sidecar, a one-time join token and the Workload API socket into pods of opted-in namespaces')
    .requiredOption('--data-dir <dir>', 'state directory (the webhook agent\'s SVID, the pods counted per entry; 0700)')
    .requiredOption('--dns-name <name>', 'the DNS name the API server calls, e.g. tessera-webhook.tessera.svc (the webhook entry\'s dns: selector)')
    .requiredOption('--namespaces <list>', 'namespaces to inject into, comma-separated (the configuration\'s namespaceSelector must also match them)')
    .requiredOption('--client-ca <file>', 'PEM CA(s) that signed the API server\'s client certificate (its AdmissionConfiguration kubeconfig): /mutate answers only that certificate')
    .requiredOption('--client-name <cn>', 'subject CN of the API server\'s client certificate (comma-separated or repeated); other certificates of that CA get 403', collect)
    .requiredOption('--id-template <id>', 'entry SPIFFE ID template, e.g. spiffe://example.org/ns/{namespace}/sa/{serviceAccount}')
    .requiredOption('--sidecar-image <image>', 'the image of the injected agent (runs `tessera agent ...`)')
    .option('--attribute <NAME=label:KEY>', 'entry attribute from a pod label, e.g. app=label:app (repeatable; NAME: app, site, compliance, location, env)', collect)
    .option('--sidecar-arg <arg>', 'extra argument for the injected `tessera agent` (repeatable), e.g. --sidecar-arg=--inbound --sidecar-arg=0.0.0.0:8443', collect)
    .option('--sidecar-server <url>', 'the control plane URL as pods reach it (default --server)')
    .option('--bundle-configmap <name>', 'ConfigMap in each opted-in namespace holding bundle.pem (the trust bundle for the sidecar\'s first connection)', 'tessera-bundle')
    .option('--sidecar-uid <uid>', 'uid the sidecar runs as (non-root)', '65532')
    .addOption(new Option('--sidecar-mode <mode>', 'native: an init container with restartPolicy Always (Kubernetes >= 1.29, started before the apps); container: appended to the containers').choices(['native', 'container']).default('native'))
    .option('--token-ttl <duration>', 'lifetime of each pod\'s one-time join token (10s to 1h)', '10m')
    .option('--listen <host:port>', 'HTTPS address', '0.0.0.0:8443')
    .option('--join-token <token>', 'one-time join token for the webhook\'s own entry; or $TESSERA_JOIN_TOKEN')
    .option('--trust-bundle <file>', 'CA bundle to trust for the first connection')
    .option('--max-body <bytes>', 'largest AdmissionReview accepted (413 above)', '3145728')
    .addOption(new Option('--patch-ca-bundle [bool]', 'keep the MutatingWebhookConfiguration\'s caBundle equal to the trust bundle through the Kubernetes API (at start and on every bundle change; needs get and patch on it). Default true').argParser(parseOnOff).default(true))
    .option('--no-patch-ca-bundle', 'do not touch caBundle (then patch it by hand after every CA rotation)')
    .option('--webhook-configuration <name>', 'the MutatingWebhookConfiguration whose caBundle is kept in step', DEFAULT_WEBHOOK_CONFIGURATION)
    .option('--kube-api <url>', 'the Kubernetes API (default https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT)')
    .option('--kube-credentials-dir <dir>', 'directory with the service account token and ca.crt', IN_CLUSTER_CREDENTIALS_DIR)
    .addOption(new Option('--log-level <level>', 'log level').choices(['debug', 'info', 'warn', 'error']).default('info'))
    .addHelpText('after', '\nAlso required: --server https://HOST:PORT (the control plane) and a scoped admin credential (--admin-dir or\n'
      + '$TESSERA_ADMIN_DIR: a named admin allowed admin:entry.create, entry.show, entry.delete and token.create).\n'
      + 'The webhook\'s own entry needs the selector dns:<--dns-name> so its SVID carries the Service name:\n'
      + '  tessera entry create --spiffe-id spiffe://TD/k8s/tessera-webhook --selector dns:tessera-webhook.tessera.svc\n'
      + 'Only the API server may call /mutate: give it a client certificate (CN as --client-name, signed by --client-ca)\n'
      + 'in its AdmissionConfiguration (deploy/kubernetes/apiserver-admission.yaml).\n'
      + 'caBundle: kept equal to the trust bundle through the Kubernetes API (in-cluster service account token; RBAC:\n'
      + 'get and patch on mutatingwebhookconfigurations/<--webhook-configuration>); --no-patch-ca-bundle to turn it off.\n'
      + 'Pods: every app container must run as one uid (securityContext.runAsUser); entries get the selector unix:uid:N.\n'
      + 'See deploy/kubernetes/ and deploy/helm/tessera/.')
    .action(run(async (g, o: Json) => {
      if (!g.server) throw new TesseraError('TESSERA_CONFIG_INVALID', 'the webhook needs --server https://HOST:PORT (the control plane URL)');
      const idTemplate = String(o.idTemplate);
      checkIdTemplate(idTemplate);
      const dnsName = String(o.dnsName);
      if (!DNS_SUBDOMAIN.test(dnsName)) throw new TesseraError('TESSERA_CONFIG_INVALID', '--dns-name must be a lower-case host name');
      const tokenTtlMs = parseDuration(String(o.tokenTtl), '--token-ttl');
      if (tokenTtlMs < 10_000 || tokenTtlMs > 3_600_000) throw new TesseraError('TESSERA_CONFIG_INVALID', '--token-ttl must be from 10s to 1h');
      const inject: InjectConfig = {
        idTemplate,
        attributes: ((o.attribute as string[] | undefined) ?? []).map(parseAttributeRule),
        serverUrl: String(o.sidecarServer ?? g.server),
        image: String(o.sidecarImage),
        extraArgs: (o.sidecarArg as string[] | undefined) ?? [],
        bundleConfigMap: String(o.bundleConfigmap),
        sidecarUid: count('--sidecar-uid', 2 ** 31 - 1)(String(o.sidecarUid)),
        sidecarMode: o.sidecarMode as 'native' | 'container',
      };
      if (!DNS_LABEL.test(inject.bundleConfigMap)) throw new TesseraError('TESSERA_CONFIG_INVALID', '--bundle-configmap must be a ConfigMap name');
      const namespaces = parseNamespaces(String(o.namespaces));
      const clientAuth = { caPem: loadClientCa(String(o.clientCa)), names: parseClientNames(o.clientName as string[]) };
      const maxBodyBytes = count('--max-body', 64 * 1024 * 1024)(String(o.maxBody));
      const listen = parseListen(String(o.listen));
      const log = createLogger({ level: o.logLevel as 'info', pretty: !g.json });
      const joinToken = (o.joinToken as string | undefined) ?? process.env.TESSERA_JOIN_TOKEN;
      const configuration = String(o.webhookConfiguration);
      if (!DNS_SUBDOMAIN.test(configuration)) throw new TesseraError('TESSERA_CONFIG_INVALID', '--webhook-configuration must be an object name (lower-case DNS subdomain)');
      const patchCaBundle = o.patchCaBundle !== false;
      const serverUrl = g.server;
      const kube = { credentialsDir: String(o.kubeCredentialsDir), ...(o.kubeApi !== undefined ? { apiUrl: String(o.kubeApi) } : {}) };
      const admin = adminClient(g);
      const { startWebhookNode } = await import('../k8s/node.js');
      const node = await (async () => {
        // Checked before the agent joins (its token is one-time): the API URL and the service account files.
        if (patchCaBundle) {
          kubeApiUrl(kube.apiUrl);
          checkKubeCredentials(kube.credentialsDir);
        }
        return startWebhookNode({
          serverUrl, dataDir: String(o.dataDir), listen, dnsName, inject, namespaces, clientAuth, admin, log, maxBodyBytes,
          tokenTtlSeconds: Math.round(tokenTtlMs / 1000),
          ...(patchCaBundle ? { caBundle: { configuration, kube } } : {}),
          ...(joinToken ? { joinToken } : {}),
          ...(o.trustBundle ? { trustBundleFile: String(o.trustBundle) } : {}),
        });
      })().catch((err: unknown) => {
        admin.close();
        throw err;
      });
      log.info('webhook ready', { port: node.webhook.port, spiffe_id: node.agent.spiffeId });
      await untilSignal(() => node.close());
    }));
}
