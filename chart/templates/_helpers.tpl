{{/* Names */}}
{{- define "immudb.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "immudb.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "immudb.primary.fullname" -}}{{ include "immudb.fullname" . }}-primary{{- end -}}
{{- define "immudb.read.fullname" -}}{{ include "immudb.fullname" . }}-read{{- end -}}
{{- define "immudb.primary.headless" -}}{{ include "immudb.primary.fullname" . }}-hl{{- end -}}
{{- define "immudb.read.headless" -}}{{ include "immudb.read.fullname" . }}-hl{{- end -}}
{{- define "immudb.secretName" -}}{{ .Values.auth.existingSecret | default (printf "%s-auth" (include "immudb.fullname" .)) }}{{- end -}}
{{- define "immudb.specName" -}}{{ include "immudb.fullname" . }}-spec{{- end -}}
{{- define "immudb.serviceAccountName" -}}{{ include "immudb.fullname" . }}{{- end -}}

{{/* The DNS name replicas replicate from and the hook dials: the primary pod's stable name. */}}
{{- define "immudb.primary.host" -}}
{{- printf "%s-0.%s.%s.svc.%s" (include "immudb.primary.fullname" .) (include "immudb.primary.headless" .) .Release.Namespace .Values.clusterDomain -}}
{{- end -}}

{{/*
IMMUDB_MAX_SESSIONS: immudb.maxSessions for clients, plus the sessions the chart itself holds.
On the primary, each replica's replicators (one per replicated database) and agent, and its own
agent; on a replica, its agent; on both, the hook Job, helm test and a backup running at once.
Called with (dict "ctx" $ "role" "primary"|"read").
*/}}
{{- define "immudb.maxSessions" -}}
{{- $values := .ctx.Values -}}
{{- $replicated := 2 -}}
{{- if eq $values.replication.mode "database" -}}
{{- $replicated = len (include "immudb.databases" .ctx | fromJson).list -}}
{{- end -}}
{{- $jobs := 3 -}}
{{- $chart := add 1 $jobs -}}
{{- /* With failover any pod may become the primary, and each agent asks every other pod what it holds during an election; up to failover.maxReplicas replicas are expected. */ -}}
{{- $replicas := int $values.replicaCount -}}
{{- if $values.failover.enabled -}}
{{- $replicas = include "immudb.failover.maxReplicas" .ctx | int -}}
{{- end -}}
{{- if or (eq .role "primary") $values.failover.enabled -}}
{{- $chart = add $chart (mul $replicas (add $replicated 1)) -}}
{{- end -}}
{{- if $values.failover.enabled -}}
{{- $chart = add $chart $replicas 1 -}}
{{- end -}}
{{- add (int $values.immudb.maxSessions) $chart -}}
{{- end -}}

{{/* Labels */}}
{{- define "immudb.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "immudb.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "immudb.selectorLabels" -}}
app.kubernetes.io/name: {{ include "immudb.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Metadata shared by every namespaced object: name, namespace, labels with a component. */}}
{{- define "immudb.metadata" -}}
name: {{ .name }}
namespace: {{ .ctx.Release.Namespace }}
labels:
  {{- include "immudb.labels" .ctx | nindent 2 }}
  {{- with .component }}
  app.kubernetes.io/component: {{ . }}
  {{- end }}
  {{- with .labels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- $annotations := merge (dict) (.annotations | default dict) (.ctx.Values.commonAnnotations | default dict) }}
{{- with $annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Images */}}
{{- define "immudb.imageRef" -}}
{{- $image := .image -}}
{{- if $image.digest -}}
{{- printf "%s/%s@%s" $image.registry $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s/%s:%s" $image.registry $image.repository (toString ($image.tag | default .default)) -}}
{{- end -}}
{{- end -}}

{{- define "immudb.image" -}}
{{- include "immudb.imageRef" (dict "image" .Values.image "default" .Chart.AppVersion) -}}
{{- end -}}

{{- define "immudb.hook.image" -}}
{{- include "immudb.imageRef" (dict "image" .Values.hook.image "default" .Chart.Version) -}}
{{- end -}}

{{/* Security: Pod Security Standard "restricted" for every pod and container. */}}
{{- define "immudb.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid | default 3322 }}
runAsGroup: {{ .uid | default 3322 }}
seccompProfile:
  type: RuntimeDefault
{{- with .fsGroup }}
fsGroup: {{ . }}
{{- end }}
{{- with .fsGroupChangePolicy }}
fsGroupChangePolicy: {{ . }}
{{- end }}
{{- end -}}

{{- define "immudb.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid | default 3322 }}
runAsGroup: {{ .uid | default 3322 }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
Checkov findings this chart accepts, each with its reason, as checkov.io/skip annotations.
Called with a list of check ids; returns a YAML dict.
*/}}
{{- define "immudb.checkovSkips" -}}
{{- $reasons := dict
  "CKV_K8S_15" "IfNotPresent with pinned tags or digests; Always would break images loaded into kind"
  "CKV_K8S_43" "digests are supported (image.digest) but tags stay the default so upgrades read clearly"
  "CKV_K8S_40" "immudb's official image runs as UID 3322 and its data volume ownership (fsGroup 3322) relies on it"
  "CKV_K8S_35" "immudb reads its admin password only from the IMMUDB_ADMIN_PASSWORD environment variable"
  "CKV_K8S_8" "a one-shot helm test pod has nothing to probe"
  "CKV_K8S_9" "a one-shot helm test pod has nothing to probe"
-}}
{{- range $i, $id := . }}
checkov.io/skip{{ add1 $i }}: {{ printf "%s=%s" $id (get $reasons $id) | quote }}
{{- end }}
{{- end -}}

{{/* Values checks that JSON schema cannot express. */}}
{{- define "immudb.validate" -}}
{{- $sync := .Values.replication.sync -}}
{{- if and $sync.enabled (lt (int $sync.acks) 1) -}}
{{- fail (printf "replication.sync.acks=%v: synchronous replication needs at least 1 acknowledgement" $sync.acks) -}}
{{- end -}}
{{- if and $sync.enabled (gt (int $sync.acks) (int .Values.replicaCount)) -}}
{{- fail (printf "replication.sync.acks=%v exceeds replicaCount=%v: the primary would block every write" $sync.acks .Values.replicaCount) -}}
{{- end -}}
{{- if and (not $sync.enabled) (gt (int $sync.acks) 0) -}}
{{- fail (printf "replication.sync.acks=%v is set while replication.sync.enabled=false: set acks to 0 or enable sync" $sync.acks) -}}
{{- end -}}
{{- if and (eq .Values.replication.mode "database") (not .Values.replication.databases) -}}
{{- fail "replication.databases is empty: database mode needs at least one database" -}}
{{- end -}}
{{- $repl := .Values.replication -}}
{{- $names := list -}}
{{- range $repl.databases -}}
{{- if kindIs "string" . -}}
{{- $names = append $names . -}}
{{- else -}}
{{- $names = append $names .name -}}
{{- end -}}
{{- end -}}
{{- if has $repl.canaryDatabase $names -}}
{{- fail (printf "replication.canaryDatabase=%s is also in replication.databases: helm test writes into the canary, never into a user database; choose another name" $repl.canaryDatabase) -}}
{{- end -}}
{{- $chartWide := include "immudb.settings" (dict "settings" .Values.databaseSettings "sync" $sync.enabled) | fromJson -}}
{{- include "immudb.validateSettings" (dict "where" "databaseSettings" "settings" $chartWide "commitConcurrency" $repl.commitConcurrency) -}}
{{- range $repl.databases -}}
{{- if kindIs "map" . -}}
{{- $effective := merge (dict) (include "immudb.settings" (dict "settings" (.settings | default dict) "sync" $sync.enabled) | fromJson) $chartWide -}}
{{- include "immudb.validateSettings" (dict "where" (printf "replication.databases[%s].settings" .name) "settings" $effective "commitConcurrency" $repl.commitConcurrency) -}}
{{- end -}}
{{- end -}}
{{- $agent := .Values.agent -}}
{{- if eq (include "immudb.durationMs" $agent.watchInterval | int64) 0 -}}
{{- fail "agent.watchInterval=0: the agent needs a time between two looks at its replica, e.g. 1s" -}}
{{- end -}}
{{- if le (include "immudb.durationMs" $agent.stallAfter | int64) 2000 -}}
{{- fail (printf "agent.stallAfter=%v must be longer than 2s: the agent wakes a replicator after 2 s without progress, before it calls the replica stalled" $agent.stallAfter) -}}
{{- end -}}
{{- if and (eq .Values.replication.mode "systemdb") .Values.replication.sync.enabled -}}
{{- fail "replication.sync.enabled=true with replication.mode=systemdb: synchronous replication is per database; use mode database" -}}
{{- end -}}
{{- if and .Values.metrics.serviceMonitor.enabled .Values.metrics.podMonitor.enabled -}}
{{- fail "metrics.serviceMonitor.enabled and metrics.podMonitor.enabled are both true: choose one" -}}
{{- end -}}
{{- if and .Values.ingress.enabled .Values.ingress.replicaHosts (not .Values.ingress.replicaHostSuffix) -}}
{{- fail "ingress.replicaHosts=true needs ingress.replicaHostSuffix" -}}
{{- end -}}
{{- if and .Values.gateway.enabled (not .Values.gateway.parentRefs) -}}
{{- fail "gateway.enabled=true needs gateway.parentRefs (the Gateway the routes attach to)" -}}
{{- end -}}
{{- if and .Values.immudb.tls.enabled (gt (int .Values.replicaCount) 0) -}}
{{- fail (printf "immudb.tls.enabled=true with replicaCount=%v: immudb's replicator dials its primary in plaintext; use replicaCount=0, or terminate TLS at the ingress" .Values.replicaCount) -}}
{{- end -}}
{{- if and .Values.immudb.tls.enabled (not .Values.immudb.tls.existingSecret) -}}
{{- fail "immudb.tls.enabled=true needs immudb.tls.existingSecret (tls.crt, tls.key, ca.crt)" -}}
{{- end -}}
{{- if and .Values.immudb.tls.enabled .Values.gateway.enabled -}}
{{- fail "immudb.tls.enabled=true with gateway.enabled=true: a TLS backend needs a BackendTLSPolicy, which this chart does not create; use the ingress" -}}
{{- end -}}
{{- if and .Values.immudb.s3.enabled (not .Values.immudb.s3.existingSecret) -}}
{{- fail "immudb.s3.enabled=true needs immudb.s3.existingSecret with the S3 credentials" -}}
{{- end -}}
{{- include "immudb.backup.validate" . -}}
{{- include "immudb.failover.validate" . -}}
{{- end -}}

{{/*
The hook binary's container (Jobs, helm test, the agent sidecar): the topology as env
(declarative), passwords and the spec as files, restricted.
Called with (dict "ctx" $ "name" "hook" "args" (list ...) "env" (list ...) "resources" map "volumeMounts" (list ...)).
*/}}
{{- define "immudb.hook.container" -}}
{{- $ctx := .ctx -}}
{{- $values := $ctx.Values -}}
name: {{ .name }}
image: {{ include "immudb.hook.image" $ctx }}
imagePullPolicy: {{ $values.hook.image.pullPolicy }}
args:
  {{- toYaml .args | nindent 2 }}
securityContext:
  {{- include "immudb.containerSecurityContext" (dict "uid" 65532) | nindent 2 }}
env:
  - name: IMMUDB_HOOK_PRIMARY_HOST
    value: {{ include "immudb.primary.host" $ctx }}
  - name: IMMUDB_HOOK_REPLICA_STATEFULSET
    value: {{ include "immudb.read.fullname" $ctx }}
  - name: IMMUDB_HOOK_REPLICA_SERVICE
    value: {{ include "immudb.read.headless" $ctx }}
  - name: IMMUDB_HOOK_NAMESPACE
    value: {{ $ctx.Release.Namespace }}
  - name: IMMUDB_HOOK_REPLICA_COUNT
    value: {{ $values.replicaCount | quote }}
  - name: IMMUDB_HOOK_CLUSTER_DOMAIN
    value: {{ $values.clusterDomain }}
  - name: IMMUDB_HOOK_AGENT_PORT
    value: {{ $values.agent.port | quote }}
  - name: IMMUDB_HOOK_ADMIN_PASSWORD_FILE
    value: /var/run/secrets/immudb/admin-password
  - name: IMMUDB_HOOK_LOG_FORMAT
    value: {{ $values.hook.logFormat }}
  - name: IMMUDB_HOOK_SPEC_FILE
    value: /etc/immudb-hook/spec.json
  {{- if $values.immudb.tls.enabled }}
  - name: IMMUDB_HOOK_TLS_CA_FILE
    value: /var/run/secrets/immudb-tls/ca.crt
  {{- end }}
  {{- include "immudb.failover.hookEnv" $ctx | nindent 2 }}
  {{- with .env }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
resources:
  {{- toYaml (.resources | default $values.hook.resources) | nindent 2 }}
volumeMounts:
  - name: passwords
    mountPath: /var/run/secrets/immudb
    readOnly: true
  {{- if $values.immudb.tls.enabled }}
  - name: tls-ca
    mountPath: /var/run/secrets/immudb-tls
    readOnly: true
  {{- end }}
  - name: spec
    mountPath: /etc/immudb-hook
    readOnly: true
  - name: tmp
    mountPath: /tmp
  {{- include "immudb.failover.apiVolumeMount" $ctx | nindent 2 }}
  {{- with .volumeMounts }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}

{{/* The volumes the hook container mounts besides /tmp: the passwords, the spec, the TLS CA. */}}
{{- define "immudb.hook.volumes" -}}
{{- $values := .Values -}}
- name: spec
  configMap:
    name: {{ include "immudb.specName" . }}
- name: passwords
  secret:
    secretName: {{ include "immudb.secretName" . }}
    defaultMode: 0440
    items:
      - key: {{ $values.auth.adminPasswordKey }}
        path: admin-password
      - key: {{ $values.auth.replicationPasswordKey }}
        path: replication-password
{{- if $values.immudb.tls.enabled }}
- name: tls-ca
  secret:
    secretName: {{ $values.immudb.tls.existingSecret }}
    defaultMode: 0440
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- include "immudb.failover.apiVolume" . }}
{{- end -}}

{{/*
A pod that runs the hook binary once (the Job, helm test, backups, restore), restricted.
Called with the arguments of "immudb.hook.container" ("component" names the container) plus
"volumes" (list ...).
*/}}
{{- define "immudb.hook.podSpec" -}}
{{- $ctx := .ctx -}}
{{- $values := $ctx.Values -}}
restartPolicy: Never
serviceAccountName: {{ include "immudb.serviceAccountName" $ctx }}
automountServiceAccountToken: false
enableServiceLinks: false
securityContext:
  {{- include "immudb.podSecurityContext" (dict "fsGroup" 65532 "uid" 65532) | nindent 2 }}
{{- with $values.image.pullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
containers:
  - {{- include "immudb.hook.container" (merge (dict "name" .component) .) | nindent 4 }}
volumes:
  - name: tmp
    emptyDir: {}
  {{- include "immudb.hook.volumes" $ctx | nindent 2 }}
  {{- with .volumes }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}

{{/* Scrape relabelings shared by the ServiceMonitor and the PodMonitor: role and release labels. */}}
{{- define "immudb.metrics.tls" -}}
{{- if .Values.immudb.tls.enabled }}
scheme: https
tlsConfig:
  serverName: {{ include "immudb.primary.host" . }}
  ca:
    secret:
      name: {{ .Values.immudb.tls.existingSecret }}
      key: ca.crt
{{- end }}
{{- end -}}

{{- define "immudb.metrics.relabelings" -}}
- sourceLabels: [__meta_kubernetes_pod_label_app_kubernetes_io_component]
  targetLabel: role
{{- if .Values.failover.enabled }}
{{- /* With failover the role moves: the agent's label says it (replica is "read", as without failover). */}}
- sourceLabels: [__meta_kubernetes_pod_label_immudb_role]
  regex: primary
  targetLabel: role
  replacement: primary
- sourceLabels: [__meta_kubernetes_pod_label_immudb_role]
  regex: replica
  targetLabel: role
  replacement: read
{{- end }}
- sourceLabels: [__meta_kubernetes_pod_label_app_kubernetes_io_instance]
  targetLabel: release
- sourceLabels: [__meta_kubernetes_pod_name]
  targetLabel: pod
{{- end -}}
