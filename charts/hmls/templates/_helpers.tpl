{{/* Labels of every object: the pod's own two, and what kustomize's config/default adds as
part-of/managed-by, plus the release's. */}}
{{- define "hmls.selectorLabels" -}}
app.kubernetes.io/name: hmls
app.kubernetes.io/component: controller
{{- end }}

{{- define "hmls.labels" -}}
{{ include "hmls.selectorLabels" . }}
app.kubernetes.io/part-of: hmls
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* The controller's arguments (config/manager/deployment.yaml's, and the values'). */}}
{{- define "hmls.args" -}}
{{- $own := list "namespace" "leader-elect" "metrics-bind-address" "shards" "kubeconfig" -}}
{{- if ne .Values.logFormat "text" }}
- --log-format={{ .Values.logFormat }}
{{- end }}
- controller
{{- if or .Values.leaderElect (gt (int .Values.shards) 1) }}
- --leader-elect
{{- end }}
- --namespace
- {{ .Release.Namespace }}
- --metrics-bind-address
- 0.0.0.0:{{ .Values.metricsPort }}
{{- if gt (int .Values.shards) 1 }}
- --shards
- {{ .Values.shards | quote }}
{{- end }}
{{- range $name, $value := .Values.flags }}
{{- if has $name $own }}
{{- fail (printf "flags.%s: the chart sets --%s itself (see values.yaml)" $name $name) }}
{{- else if eq (toString $value) "true" }}
- --{{ $name }}
{{- else if not (or (kindIs "invalid" $value) (eq (toString $value) "false")) }}
- {{ printf "--%s=%v" $name $value | quote }}
{{- end }}
{{- end }}
{{- end }}
