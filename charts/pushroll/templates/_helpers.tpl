{{/*
Names are fixed, as in deploy/: the index ConfigMap and the Lease are the
defaults of --index-configmap and --lease-name, and the RBAC names them.
One release per namespace; layouts with ClusterRoles (all but namespaced)
one per cluster.
*/}}

{{/* Labels of every object: kustomize's pairs, the component, Helm's own. */}}
{{- define "pushroll.labels" -}}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
app.kubernetes.io/name: pushroll
app.kubernetes.io/part-of: pushroll
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
{{- end }}

{{/* Pod template labels: no Helm labels, so an upgrade that changes only
the chart version restarts nothing. */}}
{{- define "pushroll.podLabels" -}}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/name: pushroll
app.kubernetes.io/part-of: pushroll
{{- end }}

{{- define "pushroll.selector" -}}
app.kubernetes.io/name: pushroll
app.kubernetes.io/component: {{ . }}
{{- end }}

{{- define "pushroll.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end }}

{{/* A string or a list, as one comma-separated value (PUSHROLL_* lists). */}}
{{- define "pushroll.csv" -}}
{{- if kindIs "slice" . }}{{ join "," . }}{{ else }}{{ . }}{{ end -}}
{{- end }}

{{/* Whether the cluster is at least the version given (Capabilities: the
API server's under `helm install`, Helm's default offline). */}}
{{- define "pushroll.kubeAtLeast" -}}
{{- if semverCompare (printf ">=%s-0" .version) .ctx.Capabilities.KubeVersion.Version }}true{{ end -}}
{{- end }}

{{/* serve's site settings, the data of ConfigMap pushroll-serve (JSON). */}}
{{- define "pushroll.serveSettings" -}}
{{- $v := .Values -}}
{{- $d := dict -}}
{{- $audience := include "pushroll.csv" $v.auth.audience -}}
{{- if $audience }}{{ $_ := set $d "PUSHROLL_AUDIENCE" $audience }}{{ end -}}
{{- if $v.auth.allowedEmails }}{{ $_ := set $d "PUSHROLL_ALLOWED_EMAIL" (join "," $v.auth.allowedEmails) }}{{ end -}}
{{- if $v.auth.subscriptions }}{{ $_ := set $d "PUSHROLL_SUBSCRIPTION" (join "," $v.auth.subscriptions) }}{{ end -}}
{{- if $v.serve.excludeNamespaces }}{{ $_ := set $d "PUSHROLL_EXCLUDE_NAMESPACE" (join "," $v.serve.excludeNamespaces) }}{{ end -}}
{{- if eq $v.layout "namespaced" }}{{ $_ := set $d "PUSHROLL_NAMESPACE" .Release.Namespace }}{{ end -}}
{{- if eq $v.layout "pull" }}
{{- $_ := set $d "PUSHROLL_PULL_SUBSCRIPTION" (join "," $v.pull.subscriptions) }}
{{- $_ := set $d "PUSHROLL_PULL_MAX_OUTSTANDING" (toString $v.pull.maxOutstanding) }}
{{- $_ := set $d "PUSHROLL_PULL_READY_TIMEOUT" $v.pull.readyTimeout }}
{{- end -}}
{{- range $k, $val := $v.serve.settings }}{{ $_ := set $d $k (toString $val) }}{{ end -}}
{{- toJson $d -}}
{{- end }}

{{/* The ConfigMap's name with kustomize's content hash (api/hasher: the
first 10 hex digits of the SHA-256 of {"data","kind","name":""} as JSON,
with 0 1 3 a e spelled g h k m t), so that a change of settings rolls
serve, and the name is the one `kubectl kustomize` gives. */}}
{{- define "pushroll.serveConfigMap" -}}
{{- $data := include "pushroll.serveSettings" . | fromJson -}}
{{- $hash := dict "data" $data "kind" "ConfigMap" "name" "" | toJson | sha256sum | trunc 10 -}}
pushroll-serve-{{ $hash | replace "0" "g" | replace "1" "h" | replace "3" "k" | replace "a" "m" | replace "e" "t" }}
{{- end }}

{{/* The container's security context, and the pod's. */}}
{{- define "pushroll.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "pushroll.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* POD_NAMESPACE, POD_NAME and the optional notification Secret. */}}
{{- define "pushroll.env" -}}
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- with .Values.notify.secretName }}
- name: PUSHROLL_NOTIFY_URL
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: url
      optional: true
- name: PUSHROLL_NOTIFY_FORMAT
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: format
      optional: true
{{- end }}
{{- end }}

{{- define "pushroll.probes" -}}
livenessProbe:
  httpGet:
    path: /healthz
    port: http
  periodSeconds: 10
  timeoutSeconds: 2
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: http
  periodSeconds: {{ .readinessPeriod }}
  timeoutSeconds: 2
  failureThreshold: {{ .readinessFailures }}
{{- end }}

{{- define "pushroll.serveWorkloadRules" -}}
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets", "daemonsets"]
  verbs: ["get", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{- define "pushroll.indexerWorkloadRules" -}}
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets", "daemonsets"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["apps"]
  resources: ["replicasets", "controllerrevisions"]
  verbs: ["list"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}
