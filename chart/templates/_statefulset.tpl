{{/*
One StatefulSet shape for both roles, so the primary and the replicas can never drift apart.
Called with (dict "ctx" $ "role" "primary"|"read" "values" .Values.primary|.Values.read "replicas" N).
*/}}
{{- define "immudb.statefulset" -}}
{{- $ctx := .ctx -}}
{{- $role := .role -}}
{{- $v := .values -}}
{{- $name := include (printf "immudb.%s.fullname" $role) $ctx -}}
{{- $values := $ctx.Values -}}
apiVersion: apps/v1
kind: StatefulSet
metadata:
  {{- $skips := include "immudb.checkovSkips" (list "CKV_K8S_15" "CKV_K8S_43" "CKV_K8S_40" "CKV_K8S_35") | fromYaml }}
  {{- include "immudb.metadata" (dict "ctx" $ctx "name" $name "component" $role "annotations" $skips) | nindent 2 }}
spec:
  replicas: {{ .replicas }}
  serviceName: {{ include (printf "immudb.%s.headless" $role) $ctx }}
  podManagementPolicy: Parallel
  updateStrategy:
    type: RollingUpdate
  persistentVolumeClaimRetentionPolicy:
    {{- toYaml $values.persistentVolumeClaimRetentionPolicy | nindent 4 }}
  selector:
    matchLabels:
      {{- include "immudb.selectorLabels" $ctx | nindent 6 }}
      app.kubernetes.io/component: {{ $role }}
  template:
    metadata:
      labels:
        {{- include "immudb.labels" $ctx | nindent 8 }}
        app.kubernetes.io/component: {{ $role }}
        {{- with $v.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $v.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      serviceAccountName: {{ include "immudb.serviceAccountName" $ctx }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      terminationGracePeriodSeconds: {{ $values.terminationGracePeriodSeconds }}
      securityContext:
        {{- include "immudb.podSecurityContext" $values.podSecurityContext | nindent 8 }}
      {{- with $values.image.pullSecrets }}
      imagePullSecrets:
        {{- range . }}
        - name: {{ . }}
        {{- end }}
      {{- end }}
      {{- with $v.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      affinity:
        podAntiAffinity:
          {{- $term := dict "topologyKey" "kubernetes.io/hostname" "labelSelector" (dict "matchLabels" (include "immudb.selectorLabels" $ctx | fromYaml)) }}
          {{- if eq $values.podAntiAffinity "hard" }}
          requiredDuringSchedulingIgnoredDuringExecution:
            - {{- toYaml $term | nindent 14 }}
          {{- else }}
          preferredDuringSchedulingIgnoredDuringExecution:
            - weight: 100
              podAffinityTerm:
                {{- toYaml $term | nindent 16 }}
          {{- end }}
      initContainers:
        {{- /* The agent, a native sidecar: it starts before immudb, runs as long as the pod, and its /readyz is immudb's readiness. */}}
        {{- $agentEnv := list
          (dict "name" "IMMUDB_AGENT_ROLE" "value" (ternary "primary" "replica" (eq $role "primary")))
          (dict "name" "IMMUDB_HOOK_REPLICATION_PASSWORD_FILE" "value" "/var/run/secrets/immudb/replication-password")
          (dict "name" "IMMUDB_AGENT_LISTEN" "value" (printf "0.0.0.0:%v" $values.agent.port))
          (dict "name" "IMMUDB_AGENT_POLL_INTERVAL" "value" $values.agent.pollInterval)
          (dict "name" "IMMUDB_AGENT_WATCH_INTERVAL" "value" $values.agent.watchInterval)
          (dict "name" "IMMUDB_AGENT_MAX_LAG" "value" $values.agent.maxLag)
          (dict "name" "IMMUDB_AGENT_STALL_AFTER" "value" $values.agent.stallAfter)
          (dict "name" "IMMUDB_AGENT_DRIFT_GRACE" "value" $values.agent.driftGrace)
          (dict "name" "IMMUDB_AGENT_DRAIN" "value" $values.agent.drain)
        }}
        {{- $agentEnv = concat $agentEnv (include "immudb.failover.agentEnv" (dict "ctx" $ctx "role" $role) | fromYamlArray) }}
        - {{- include "immudb.hook.container" (dict "ctx" $ctx "name" "agent" "args" (list "agent") "env" $agentEnv "resources" $values.agent.resources) | nindent 10 }}
          restartPolicy: Always
          ports:
            - name: agent
              containerPort: {{ $values.agent.port }}
          livenessProbe:
            httpGet:
              path: /livez
              port: {{ $values.agent.port }}
            periodSeconds: 20
            failureThreshold: 3
      containers:
        - name: immudb
          image: {{ include "immudb.image" $ctx }}
          imagePullPolicy: {{ $values.image.pullPolicy }}
          securityContext:
            {{- include "immudb.containerSecurityContext" (dict) | nindent 12 }}
          ports:
            - name: grpc
              containerPort: 3322
            - name: metrics
              containerPort: 9497
            {{- if $values.immudb.webConsole }}
            - name: http
              containerPort: 8080
            {{- end }}
            {{- if $values.immudb.pgsql }}
            - name: pgsql
              containerPort: 5432
            {{- end }}
          env:
            - name: POD_NAME
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
            - name: IMMUDB_DIR
              value: /var/lib/immudb
            - name: IMMUDB_DEVMODE
              value: "false"
            - name: IMMUDB_LOGFORMAT
              value: {{ $values.immudb.logFormat | quote }}
            - name: IMMUDB_WEB_SERVER
              value: {{ $values.immudb.webConsole | quote }}
            - name: IMMUDB_PGSQL_SERVER
              value: {{ $values.immudb.pgsql | quote }}
            - name: IMMUDB_MAX_SESSIONS
              value: {{ include "immudb.maxSessions" (dict "ctx" $ctx "role" $role) | quote }}
            - name: IMMUDB_ADMIN_PASSWORD
              valueFrom:
                secretKeyRef:
                  name: {{ include "immudb.secretName" $ctx }}
                  key: {{ $values.auth.adminPasswordKey }}
            {{- if $values.auth.forceAdminPassword }}
            - name: IMMUDB_FORCE_ADMIN_PASSWORD
              value: "true"
            {{- end }}
            {{- if and (eq $role "read") (eq $values.replication.mode "systemdb") }}
            - name: IMMUDB_REPLICATION_IS_REPLICA
              value: "true"
            - name: IMMUDB_REPLICATION_PRIMARY_HOST
              value: {{ include "immudb.primary.host" $ctx }}
            - name: IMMUDB_REPLICATION_PRIMARY_PORT
              value: "3322"
            - name: IMMUDB_REPLICATION_PRIMARY_USERNAME
              value: immudb
            - name: IMMUDB_REPLICATION_PRIMARY_PASSWORD
              valueFrom:
                secretKeyRef:
                  name: {{ include "immudb.secretName" $ctx }}
                  key: {{ $values.auth.adminPasswordKey }}
            - name: IMMUDB_REPLICATION_PREFETCH_TX_BUFFER_SIZE
              value: {{ $values.replication.prefetchTxBufferSize | quote }}
            - name: IMMUDB_REPLICATION_COMMIT_CONCURRENCY
              value: {{ $values.replication.commitConcurrency | quote }}
            {{- end }}
            {{- if $values.immudb.tls.enabled }}
            - name: IMMUDB_CERTIFICATE
              value: /etc/immudb/tls/tls.crt
            - name: IMMUDB_PKEY
              value: /etc/immudb/tls/tls.key
            {{- end }}
            {{- with $values.immudb.s3 }}
            {{- if .enabled }}
            - name: IMMUDB_S3_STORAGE
              value: "true"
            - name: IMMUDB_S3_ENDPOINT
              value: {{ .endpoint | quote }}
            - name: IMMUDB_S3_BUCKET_NAME
              value: {{ .bucketName | quote }}
            - name: IMMUDB_S3_LOCATION
              value: {{ .location | quote }}
            - name: IMMUDB_S3_PATH_PREFIX
              value: "{{ .pathPrefix }}/$(POD_NAME)"
            - name: IMMUDB_S3_ACCESS_KEY_ID
              valueFrom:
                secretKeyRef:
                  name: {{ .existingSecret }}
                  key: {{ .accessKeyIdKey }}
            - name: IMMUDB_S3_SECRET_KEY
              valueFrom:
                secretKeyRef:
                  name: {{ .existingSecret }}
                  key: {{ .secretKeyKey }}
            {{- end }}
            {{- end }}
            {{- with $values.immudb.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- if $values.startupProbe.enabled }}
          startupProbe:
            httpGet:
              path: /readyz
              port: metrics
              scheme: {{ ternary "HTTPS" "HTTP" $values.immudb.tls.enabled }}
            periodSeconds: {{ $values.startupProbe.periodSeconds }}
            failureThreshold: {{ $values.startupProbe.failureThreshold }}
          {{- end }}
          {{- if $values.readinessProbe.enabled }}
          {{- /* The agent's verdict, not immudb's /readyz (which only means "the process is up"). */}}
          readinessProbe:
            httpGet:
              path: /readyz
              port: {{ $values.agent.port }}
            periodSeconds: {{ $values.readinessProbe.periodSeconds }}
            failureThreshold: {{ $values.readinessProbe.failureThreshold }}
          {{- end }}
          {{- /* Before immudb gets SIGTERM the kubelet asks the agent, which still runs (a native sidecar stops after immudb): a replica drains, the primary hands its role over first (failover). By number: the image has no shell for an exec hook, and a port named only on a native sidecar is not resolved. */}}
          lifecycle:
            preStop:
              httpGet:
                path: /prestop
                port: {{ $values.agent.port }}
          {{- if $values.livenessProbe.enabled }}
          livenessProbe:
            tcpSocket:
              port: grpc
            periodSeconds: {{ $values.livenessProbe.periodSeconds }}
            failureThreshold: {{ $values.livenessProbe.failureThreshold }}
            timeoutSeconds: 5
          {{- end }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          volumeMounts:
            - name: data
              mountPath: /var/lib/immudb
              subPath: immudb
            - name: tmp
              mountPath: /tmp
            {{- if $values.immudb.tls.enabled }}
            - name: tls
              mountPath: /etc/immudb/tls
              readOnly: true
            {{- end }}
            {{- with $v.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir: {}
        {{- include "immudb.hook.volumes" $ctx | nindent 8 }}
        {{- if $values.immudb.tls.enabled }}
        - name: tls
          secret:
            secretName: {{ $values.immudb.tls.existingSecret }}
            defaultMode: 0440
        {{- end }}
        {{- with $v.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumeClaimTemplates:
    - metadata:
        name: data
        labels:
          {{- include "immudb.selectorLabels" $ctx | nindent 10 }}
          app.kubernetes.io/component: {{ $role }}
        {{- with $v.persistence.annotations }}
        annotations:
          {{- toYaml . | nindent 10 }}
        {{- end }}
      spec:
        accessModes:
          {{- toYaml $v.persistence.accessModes | nindent 10 }}
        {{- with $v.persistence.storageClass }}
        storageClassName: {{ . | quote }}
        {{- end }}
        resources:
          requests:
            storage: {{ $v.persistence.size }}
{{- end -}}
