{{/*
Shared by the backup CronJob and the restore Job: the databases, where backups live (a
PersistentVolumeClaim mounted at /backups, or S3 with keys as files from a Secret), and checks.
*/}}

{{/* The user databases of replication.databases (names, or objects with a name), comma separated; not the canary. */}}
{{- define "immudb.backup.replicatedNames" -}}
{{- $names := list -}}
{{- range .Values.replication.databases -}}
{{- if kindIs "string" . -}}
{{- $names = append $names . -}}
{{- else -}}
{{- $names = append $names .name -}}
{{- end -}}
{{- end -}}
{{- join "," $names -}}
{{- end -}}

{{- define "immudb.backup.databases" -}}
{{- if .Values.backup.databases -}}
{{- join "," .Values.backup.databases -}}
{{- else -}}
{{- include "immudb.backup.replicatedNames" . -}}
{{- end -}}
{{- end -}}

{{- define "immudb.restore.databases" -}}
{{- if .Values.restore.databases -}}
{{- join "," .Values.restore.databases -}}
{{- else -}}
{{- include "immudb.backup.databases" . -}}
{{- end -}}
{{- end -}}

{{- define "immudb.backup.claimName" -}}
{{- .Values.backup.destination.pvc.existingClaim | default (printf "%s-backup" (include "immudb.fullname" .)) -}}
{{- end -}}

{{/* The destination as the hook's env, a YAML list. */}}
{{- define "immudb.backup.destinationEnv" -}}
{{- $d := .Values.backup.destination -}}
- name: IMMUDB_HOOK_BACKUP_PREFIX
  value: {{ .Values.backup.prefix | quote }}
{{- if eq $d.type "pvc" }}
- name: IMMUDB_HOOK_BACKUP_DIR
  value: /backups
{{- else }}
- name: IMMUDB_HOOK_S3_BUCKET
  value: {{ $d.s3.bucket | quote }}
- name: IMMUDB_HOOK_S3_ENDPOINT
  value: {{ $d.s3.endpoint | quote }}
- name: IMMUDB_HOOK_S3_REGION
  value: {{ $d.s3.region | quote }}
- name: IMMUDB_HOOK_S3_PATH_STYLE
  value: {{ $d.s3.pathStyle | quote }}
{{- if $d.s3.existingSecret }}
- name: IMMUDB_HOOK_S3_ACCESS_KEY_ID_FILE
  value: /var/run/secrets/backup-s3/access-key-id
- name: IMMUDB_HOOK_S3_SECRET_ACCESS_KEY_FILE
  value: /var/run/secrets/backup-s3/secret-access-key
{{- end }}
{{- end }}
{{- with .Values.backup.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "immudb.backup.volumes" -}}
{{- $d := .Values.backup.destination -}}
{{- if eq $d.type "pvc" }}
- name: backups
  persistentVolumeClaim:
    claimName: {{ include "immudb.backup.claimName" . }}
{{- else if $d.s3.existingSecret }}
- name: backup-s3
  secret:
    secretName: {{ $d.s3.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ $d.s3.accessKeyIdKey }}
        path: access-key-id
      - key: {{ $d.s3.secretAccessKeyKey }}
        path: secret-access-key
{{- else }}
[]
{{- end }}
{{- end -}}

{{- define "immudb.backup.volumeMounts" -}}
{{- $d := .Values.backup.destination -}}
{{- if eq $d.type "pvc" }}
- name: backups
  mountPath: /backups
{{- else if $d.s3.existingSecret }}
- name: backup-s3
  mountPath: /var/run/secrets/backup-s3
  readOnly: true
{{- else }}
[]
{{- end }}
{{- end -}}

{{/* The S3 endpoint's port: explicit in the URL, else 80 for http:// and 443 otherwise. */}}
{{- define "immudb.backup.s3Port" -}}
{{- $endpoint := .Values.backup.destination.s3.endpoint -}}
{{- $hostPort := first (splitList "/" (trimPrefix "http://" (trimPrefix "https://" $endpoint))) -}}
{{- if contains ":" $hostPort -}}
{{- last (splitList ":" $hostPort) -}}
{{- else if hasPrefix "http://" $endpoint -}}
80
{{- else -}}
443
{{- end -}}
{{- end -}}

{{/* Combinations the schema cannot express. */}}
{{- define "immudb.backup.validate" -}}
{{- $b := .Values.backup -}}
{{- if or $b.enabled .Values.restore.enabled -}}
{{- if and (eq $b.destination.type "s3") (not $b.destination.s3.bucket) -}}
{{- fail "backup.destination.s3.bucket is empty: backup.destination.type=s3 needs the bucket to write to and restore from" -}}
{{- end -}}
{{- if and (eq .Values.replication.mode "systemdb") (not $b.databases) -}}
{{- fail "backup.databases is empty with replication.mode=systemdb: name the databases to back up (systemdb and defaultdb cannot be)" -}}
{{- end -}}
{{- end -}}
{{- if .Values.restore.enabled -}}
{{- $databases := splitList "," (include "immudb.restore.databases" .) -}}
{{- if and (gt (int .Values.restore.upToTx) 0) (gt (len $databases) 1) -}}
{{- fail (printf "restore.upToTx=%v with %d databases (%s): a transaction number belongs to one database; set restore.databases to one" .Values.restore.upToTx (len $databases) (join "," $databases)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The backup and restore pods, as NetworkPolicy peers of the immudb pods, when they run. */}}
{{- define "immudb.networkPolicy.backupPeers" -}}
{{- if .ctx.Values.backup.enabled }}
- {{- toYaml .from.backup | nindent 2 }}
{{- end }}
{{- if and .ctx.Values.restore.enabled (eq .role "primary") }}
- {{- toYaml .from.restore | nindent 2 }}
{{- end }}
{{- end -}}
