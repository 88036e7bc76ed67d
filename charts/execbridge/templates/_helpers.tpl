{{/* Names, labels and the pieces every workload shares. */}}

{{- define "execbridge.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "execbridge.name" -}}
{{- printf "%s-%s" (include "execbridge.fullname" .root) .component -}}
{{- end -}}

{{- define "execbridge.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
app.kubernetes.io/name: execbridge
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: execbridge
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "execbridge.selectorLabels" -}}
app.kubernetes.io/name: execbridge
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* registry/execbridge-<component>:<tag>, or @<digest> when one is pinned. */}}
{{- define "execbridge.image" -}}
{{- $digest := get .root.Values.image.digests .component -}}
{{- if $digest -}}
{{- printf "%s/execbridge-%s@%s" .root.Values.image.registry .component $digest -}}
{{- else -}}
{{- printf "%s/execbridge-%s:%s" .root.Values.image.registry .component (default .root.Chart.AppVersion .root.Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* mesh: the mesh owns mTLS; native: the services do it with operator-issued certs. */}}
{{- define "execbridge.tlsMode" -}}
{{- if eq .Values.mesh "none" -}}native{{- else -}}mesh{{- end -}}
{{- end -}}

{{- define "execbridge.tlsSecret" -}}
{{- printf "%s-tls" (include "execbridge.name" .) -}}
{{- end -}}

{{- define "execbridge.svcHost" -}}
{{- printf "%s.%s.svc.cluster.local" (include "execbridge.name" .) .root.Release.Namespace -}}
{{- end -}}

{{/* Pod labels and annotations that enrol a pod in the selected mesh. */}}
{{- define "execbridge.meshPodLabels" -}}
{{- if eq .Values.mesh "istio" }}
sidecar.istio.io/inject: "true"
{{- end }}
{{- end -}}

{{- define "execbridge.meshPodAnnotations" -}}
{{- if eq .Values.mesh "linkerd" }}
linkerd.io/inject: enabled
{{- else if eq .Values.mesh "istio" }}
# Hold the application until the sidecar is ready, so the first outbound call succeeds.
proxy.istio.io/config: '{"holdApplicationUntilProxyStarts": true}'
{{- end }}
{{- end -}}

{{/* The [server.tls] section of a service's config (crates/runtime TlsConfig): mesh
     mode is plaintext to the sidecar; native mode reads the operator-issued files, which
     the runtime re-reads on change (so a rotation needs no restart). */}}
{{- define "execbridge.tlsToml" -}}
{{- $root := .root -}}

[server.tls]
mode = "{{ include "execbridge.tlsMode" $root }}"
{{- if eq (include "execbridge.tlsMode" $root) "native" }}
cert_file = "{{ $root.Values.tls.mountPath }}/tls.crt"
key_file = "{{ $root.Values.tls.mountPath }}/tls.key"
ca_file = "{{ $root.Values.tls.mountPath }}/ca.crt"
{{- if eq .component "gateway" }}
require_client_cert = {{ $root.Values.gateway.requireClientCert }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Container-level pieces every service container shares. */}}
{{/* Probes. In mesh mode the gRPC port speaks plaintext (h2c) and the kubelet's native
     gRPC probe asks grpc.health.v1 directly. In native TLS mode the kubelet cannot do the
     TLS handshake, so the probes use the admin port's /healthz and /readyz (plaintext
     HTTP, driven by the same health state). Ports are numeric either way. */}}
{{- define "execbridge.probes" -}}
{{- $v := .v -}}
{{- $native := eq (include "execbridge.tlsMode" .root) "native" -}}
{{- range $probe := list "startupProbe" "livenessProbe" "readinessProbe" }}
{{ $probe }}:
  {{- if $native }}
  httpGet:
    path: {{ if eq $probe "readinessProbe" }}/readyz{{ else }}/healthz{{ end }}
    port: {{ $v.ports.admin }}
  {{- else }}
  grpc:
    port: {{ $v.ports.grpc }}
  {{- end }}
  {{- if eq $probe "startupProbe" }}
  periodSeconds: 2
  failureThreshold: 60
  {{- else if eq $probe "livenessProbe" }}
  periodSeconds: 10
  timeoutSeconds: 2
  failureThreshold: 3
  {{- else }}
  periodSeconds: 5
  timeoutSeconds: 2
  failureThreshold: 2
  {{- end }}
{{- end }}
{{- end -}}

{{- define "execbridge.ports" -}}
ports:
  - name: grpc
    containerPort: {{ .grpc }}
    protocol: TCP
  - name: admin
    containerPort: {{ .admin }}
    protocol: TCP
{{- end -}}

{{/* Volumes: config (ConfigMap) and, in native TLS mode, the certificate Secret, both
     mounted as directories so updates arrive (a Secret update is a ..data symlink swap). */}}
{{- define "execbridge.volumeMounts" -}}
- name: config
  mountPath: /etc/execbridge/config
  readOnly: true
{{- if eq (include "execbridge.tlsMode" .root) "native" }}
- name: tls
  mountPath: {{ .root.Values.tls.mountPath }}
  readOnly: true
{{- end }}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{- define "execbridge.volumes" -}}
- name: config
  configMap:
    name: {{ include "execbridge.name" . }}-config
{{- if eq (include "execbridge.tlsMode" .root) "native" }}
- name: tls
  secret:
    # Issued by the operator after install: the pod waits in ContainerCreating until the
    # Secret exists instead of starting without certificates.
    secretName: {{ include "execbridge.tlsSecret" . }}
{{- end }}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end -}}

{{/* "true" when the executor's SQLite audit file gets a volume of its own; empty otherwise. */}}
{{- define "execbridge.auditVolume" -}}
{{- $a := .Values.executor.audit -}}
{{- if and (eq $a.sink "sqlite") $a.persistence.enabled -}}true{{- end -}}
{{- end }}

{{/* One ReadWriteOnce claim template of the executor's StatefulSet: "name", its
"persistence" values (size, storageClassName) and the component context "c". */}}
{{- define "execbridge.claimTemplate" -}}
- apiVersion: v1
  kind: PersistentVolumeClaim
  metadata:
    name: {{ .name }}
    labels:
      {{- include "execbridge.selectorLabels" .c | nindent 6 }}
  spec:
    accessModes: [ReadWriteOnce]
    {{- if .persistence.storageClassName }}
    storageClassName: {{ .persistence.storageClassName }}
    {{- end }}
    resources:
      requests:
        storage: {{ .persistence.size }}
{{- end }}
