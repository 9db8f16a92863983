{{/*
Failover (failover.enabled): the Lease that names the primary, the label the Services select,
the Kubernetes API access of the agent and hook containers, and the checks.
*/}}

{{- define "immudb.failover.leaseName" -}}{{ include "immudb.primary.fullname" . }}{{- end -}}

{{/* The write Service's DNS name: replicas replicate from it, so a failover needs no reconfiguration. */}}
{{- define "immudb.primary.service" -}}
{{- printf "%s.%s.svc.%s" (include "immudb.primary.fullname" .) .Release.Namespace .Values.clusterDomain -}}
{{- end -}}

{{/* failover.maxReplicas, or replicaCount when it is null: read pods up to it may label themselves. */}}
{{- define "immudb.failover.maxReplicas" -}}
{{- $max := .Values.failover.maxReplicas -}}
{{- ternary .Values.replicaCount $max (kindIs "invalid" $max) | int -}}
{{- end -}}

{{/* Every immudb pod that may label itself, for the Role's resourceNames: up to failover.maxReplicas. */}}
{{- define "immudb.failover.podNames" -}}
{{- $names := list (printf "%s-0" (include "immudb.primary.fullname" .)) -}}
{{- range $i := until (include "immudb.failover.maxReplicas" . | int) -}}
{{- $names = append $names (printf "%s-%d" (include "immudb.read.fullname" $) $i) -}}
{{- end -}}
{{- toJson $names -}}
{{- end -}}

{{/* The longest hand-over the Lease allows, in ms: leaseDuration minus two of the agent's Kubernetes calls (half a poll, at most 2 s: agent/config.rs, lease_call_timeout). */}}
{{- define "immudb.failover.longestSwitchoverMs" -}}
{{- $lease := include "immudb.durationMs" .Values.failover.leaseDuration | int64 -}}
{{- $call := min (div (include "immudb.durationMs" .Values.agent.pollInterval | int64) 2) 2000 -}}
{{- sub $lease (mul 2 $call) -}}
{{- end -}}

{{/* failover.switchoverTimeout in ms; null: 10 s or the longest the Lease allows, whichever is shorter (as the agent's default). */}}
{{- define "immudb.failover.switchoverMs" -}}
{{- $set := .Values.failover.switchoverTimeout -}}
{{- if kindIs "invalid" $set -}}
{{- min 10000 (include "immudb.failover.longestSwitchoverMs" . | int64) -}}
{{- else -}}
{{- include "immudb.durationMs" $set -}}
{{- end -}}
{{- end -}}

{{/* Env of every hook container with failover: the primary is the Lease's holder. */}}
{{- define "immudb.failover.hookEnv" -}}
{{- if .Values.failover.enabled }}
- name: IMMUDB_HOOK_LEASE_NAME
  value: {{ include "immudb.failover.leaseName" . }}
- name: IMMUDB_HOOK_REPLICATION_PRIMARY_HOST
  value: {{ include "immudb.primary.service" . }}
{{- end }}
{{- end -}}

{{/*
The agent's failover env: its pod's name (for its label) and address (its identity in the Lease).
Called with (dict "ctx" $ "role" "primary"|"read").
*/}}
{{- define "immudb.failover.agentEnv" -}}
{{- $values := .ctx.Values -}}
{{- if $values.failover.enabled -}}
{{- $headless := include (printf "immudb.%s.headless" .role) .ctx -}}
{{- $env := list
  (dict "name" "IMMUDB_AGENT_POD_NAME" "valueFrom" (dict "fieldRef" (dict "fieldPath" "metadata.name")))
  (dict "name" "IMMUDB_AGENT_POD_HOST" "value" (printf "$(IMMUDB_AGENT_POD_NAME).%s.%s.svc.%s" $headless .ctx.Release.Namespace $values.clusterDomain))
  (dict "name" "IMMUDB_AGENT_LEASE_DURATION" "value" $values.failover.leaseDuration)
  (dict "name" "IMMUDB_AGENT_FAILOVER_COOLDOWN" "value" $values.failover.cooldown)
  (dict "name" "IMMUDB_AGENT_ALLOW_DATA_LOSS" "value" (toString $values.failover.allowDataLoss))
  (dict "name" "IMMUDB_AGENT_MAX_REPLICAS" "value" (include "immudb.failover.maxReplicas" .ctx))
  (dict "name" "IMMUDB_AGENT_PRIMARY_STATEFULSET" "value" (include "immudb.primary.fullname" .ctx))
  (dict "name" "IMMUDB_AGENT_ROLLOUT_WAIT" "value" $values.failover.rolloutWait)
-}}
{{- with $values.failover.switchoverTimeout }}
{{- $env = append $env (dict "name" "IMMUDB_AGENT_SWITCHOVER_TIMEOUT" "value" .) -}}
{{- end }}
{{- toYaml $env -}}
{{- else -}}
[]
{{- end -}}
{{- end -}}

{{/* The service-account token, the cluster's CA and the namespace, as automounting would give them, for the hook containers only (never immudb's). */}}
{{- define "immudb.failover.apiVolume" -}}
{{- if .Values.failover.enabled }}
- name: kube-api-access
  projected:
    defaultMode: 0440
    sources:
      - serviceAccountToken:
          path: token
          expirationSeconds: 3607
      - configMap:
          name: kube-root-ca.crt
          items:
            - key: ca.crt
              path: ca.crt
      - downwardAPI:
          items:
            - path: namespace
              fieldRef:
                fieldPath: metadata.namespace
{{- end }}
{{- end -}}

{{- define "immudb.failover.apiVolumeMount" -}}
{{- if .Values.failover.enabled }}
- name: kube-api-access
  mountPath: /var/run/secrets/kubernetes.io/serviceaccount
  readOnly: true
{{- end }}
{{- end -}}

{{/* A Service's selector for a role: the agent's label with failover, the StatefulSet's component without. */}}
{{- define "immudb.roleSelector" -}}
{{- include "immudb.selectorLabels" .ctx }}
{{- if .ctx.Values.failover.enabled }}
immudb/role: {{ ternary "primary" "replica" (eq .role "primary") }}
{{- else }}
app.kubernetes.io/component: {{ .role }}
{{- end }}
{{- end -}}

{{- define "immudb.failover.validate" -}}
{{- $f := .Values.failover -}}
{{- if $f.enabled -}}
{{- $sync := .Values.replication.sync -}}
{{- if eq .Values.replication.mode "systemdb" -}}
{{- fail "failover.enabled=true with replication.mode=systemdb: systemdb replication is set by each pod's IMMUDB_REPLICATION_* env, which cannot follow a primary that moves; use mode database" -}}
{{- end -}}
{{- if lt (int .Values.replicaCount) 1 -}}
{{- fail "failover.enabled=true with replicaCount=0: there is no replica to take over; set replicaCount >= 1" -}}
{{- end -}}
{{- if lt (include "immudb.failover.maxReplicas" . | int) (int .Values.replicaCount) -}}
{{- fail (printf "failover.maxReplicas=%v is below replicaCount=%v: every declared read pod must be able to set its role label; set it to at least %v, or null" $f.maxReplicas .Values.replicaCount .Values.replicaCount) -}}
{{- end -}}
{{- if and (not $sync.enabled) (not $f.allowDataLoss) -}}
{{- fail "failover.enabled=true needs replication.sync.enabled=true with replication.sync.acks >= 1 (no acknowledged write is lost), or failover.allowDataLoss=true (a failover may lose the last asynchronously replicated transactions)" -}}
{{- end -}}
{{- if and $sync.enabled (ge (int $sync.acks) (int .Values.replicaCount)) -}}
{{- fail (printf "replication.sync.acks=%v with failover.enabled=true and replicaCount=%v: after a failover %v replica(s) remain to acknowledge and every write would block; set replicaCount to at least %v (acks + 1)" $sync.acks .Values.replicaCount (sub (int .Values.replicaCount) 1) (add (int $sync.acks) 1)) -}}
{{- end -}}
{{- $lease := include "immudb.durationMs" $f.leaseDuration | int64 -}}
{{- $poll := include "immudb.durationMs" .Values.agent.pollInterval | int64 -}}
{{- if lt $lease (mul 3 $poll) -}}
{{- fail (printf "failover.leaseDuration=%v is shorter than 3 x agent.pollInterval=%v: the primary must get a second chance to renew before it stops serving writes" $f.leaseDuration .Values.agent.pollInterval) -}}
{{- end -}}
{{- $switchover := include "immudb.failover.switchoverMs" . | int64 -}}
{{- if not (kindIs "invalid" $f.switchoverTimeout) -}}
{{- $longest := include "immudb.failover.longestSwitchoverMs" . | int64 -}}
{{- if or (eq $switchover 0) (gt $switchover $longest) -}}
{{- fail (printf "failover.switchoverTimeout=%v must be above 0 and at most %vms, failover.leaseDuration=%v minus two of the agent's API calls: the other pods must not see the Lease expire during a hand-over" $f.switchoverTimeout $longest $f.leaseDuration) -}}
{{- end -}}
{{- end -}}
{{- $rollout := include "immudb.durationMs" $f.rolloutWait | int64 -}}
{{- $stopping := add $rollout $switchover 10000 -}}
{{- if gt $stopping (mul (int64 .Values.terminationGracePeriodSeconds) 1000) -}}
{{- fail (printf "failover.rolloutWait=%v + failover.switchoverTimeout (%vms) + 10s for immudb to stop exceed terminationGracePeriodSeconds=%v: the kubelet would kill the primary during its hand-over; raise terminationGracePeriodSeconds to at least %v or shorten the waits" $f.rolloutWait $switchover .Values.terminationGracePeriodSeconds (div (add $stopping 999) 1000)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
