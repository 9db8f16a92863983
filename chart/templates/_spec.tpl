{{/*
The desired state the hook Job and the agents read (hook/src/config/spec.rs): databases with their
settings, the chart-wide settings, replication options. Unset settings ("" or null) stay unmanaged.
syncFrequency "auto" is resolved here, so the hook only ever reads durations: 1ms with synchronous
replication (every replicated database of the release waits for acks; primary and replicas both
fsync within the commit's round trip), 5ms without.
Called with (dict "settings" map "sync" .Values.replication.sync.enabled).
*/}}
{{- define "immudb.settings" -}}
{{- $settings := dict -}}
{{- range $key, $value := omit .settings "applySettings" -}}
{{- if and (eq $key "syncFrequency") (eq (toString $value) "auto") -}}
{{- $value = ternary "1ms" "5ms" $.sync -}}
{{- end -}}
{{- if not (or (kindIs "invalid" $value) (eq (toString $value) "")) -}}
{{- $_ := set $settings $key $value -}}
{{- end -}}
{{- end -}}
{{- toJson $settings -}}
{{- end -}}

{{/* Each replicated database as (dict "name" "settings"), the canary last. */}}
{{- define "immudb.databases" -}}
{{- $databases := list -}}
{{- $sync := .Values.replication.sync.enabled -}}
{{- range .Values.replication.databases -}}
{{- if kindIs "string" . -}}
{{- $databases = append $databases (dict "name" . "settings" dict) -}}
{{- else -}}
{{- $databases = append $databases (dict "name" .name "settings" (include "immudb.settings" (dict "settings" (.settings | default dict) "sync" $sync) | fromJson)) -}}
{{- end -}}
{{- end -}}
{{- with .Values.replication.canaryDatabase -}}
{{- $databases = append $databases (dict "name" . "settings" dict) -}}
{{- end -}}
{{- toJson (dict "list" $databases) -}}
{{- end -}}

{{- define "immudb.spec" -}}
{{- $repl := .Values.replication -}}
{{- $spec := dict
  "mode" $repl.mode
  "applySettings" .Values.databaseSettings.applySettings
  "replicationUser" .Values.auth.replicationUser
  "replication" (dict
    "sync" $repl.sync
    "prefetchTxBufferSize" $repl.prefetchTxBufferSize
    "commitConcurrency" $repl.commitConcurrency
    "allowTxDiscarding" (or $repl.allowTxDiscarding .Values.failover.enabled)
    "skipIntegrityCheck" $repl.skipIntegrityCheck
    "waitForIndexing" $repl.waitForIndexing)
-}}
{{- if eq $repl.mode "database" -}}
{{- $_ := set $spec "databases" (include "immudb.databases" . | fromJson).list -}}
{{- $_ := set $spec "settings" (include "immudb.settings" (dict "settings" .Values.databaseSettings "sync" $repl.sync.enabled) | fromJson) -}}
{{- end -}}
{{- toPrettyJson $spec -}}
{{- end -}}

{{/* A duration as the spec writes it ("5ms", "24h") in milliseconds; "0" is 0. */}}
{{- define "immudb.durationMs" -}}
{{- $text := toString . -}}
{{- $number := regexFind "^[0-9]+" $text -}}
{{- $factors := dict "ms" 1 "s" 1000 "m" 60000 "h" 3600000 "d" 86400000 -}}
{{- $unit := trimPrefix $number $text -}}
{{- mul (atoi $number) (get $factors $unit | default 0) -}}
{{- end -}}

{{/*
Settings rules a schema cannot express, for the chart-wide settings and each override.
Called with (dict "where" "databaseSettings" "settings" map "commitConcurrency" n).
*/}}
{{- define "immudb.validateSettings" -}}
{{- $s := .settings -}}
{{- $hour := 3600000 -}}
{{- with $s.retentionPeriod -}}
{{- $ms := include "immudb.durationMs" . | int64 -}}
{{- if and (gt $ms 0) (lt $ms (mul 24 $hour)) -}}
{{- fail (printf "%s.retentionPeriod=%v: must be 0 (keep everything) or at least 24h, immudb's minimum" $.where .) -}}
{{- end -}}
{{- end -}}
{{- with $s.truncationFrequency -}}
{{- if lt (include "immudb.durationMs" . | int64) $hour -}}
{{- fail (printf "%s.truncationFrequency=%v: must be at least 1h, immudb's minimum" $.where .) -}}
{{- end -}}
{{- end -}}
{{- with $s.syncFrequency -}}
{{- if gt (include "immudb.durationMs" . | int64) $hour -}}
{{- fail (printf "%s.syncFrequency=%v: must be between 0ms and 1h" $.where .) -}}
{{- end -}}
{{- end -}}
{{- if and (not (kindIs "invalid" $s.maxConcurrency)) (gt (int $.commitConcurrency) (int $s.maxConcurrency)) -}}
{{- fail (printf "replication.commitConcurrency=%v exceeds %s.maxConcurrency=%v: immudb accepts it, then fails every replicated transaction with 'max concurrency limit exceeded'" $.commitConcurrency $.where $s.maxConcurrency) -}}
{{- end -}}
{{- end -}}
