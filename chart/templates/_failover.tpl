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
-}}
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
{{- end -}}
{{- end -}}
