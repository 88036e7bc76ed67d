{{- define "execbridge.validate" -}}
{{- /* Rules that relate two values, which values.schema.json cannot express. */ -}}
{{- if ge (int .Values.gateway.executorShard) (int .Values.executor.shards) -}}
{{- fail (printf "gateway.executorShard (%d) must name an existing shard: executor.shards is %d" (int .Values.gateway.executorShard) (int .Values.executor.shards)) -}}
{{- end -}}
{{- range $c := list "gateway" "marketdata" -}}
{{- $a := (get $.Values $c).autoscaling -}}
{{- if lt (int $a.maxReplicas) (int $a.minReplicas) -}}
{{- fail (printf "%s.autoscaling.maxReplicas must be at least minReplicas" $c) -}}
{{- end -}}
{{- end -}}
{{- with .Values.operator.certificates -}}
{{- if ge (int .renewBeforeHours) (int .lifetimeHours) -}}
{{- fail "operator.certificates.renewBeforeHours must be shorter than lifetimeHours" -}}
{{- end -}}
{{- if ge (int .caRenewBeforeHours) (int .caLifetimeHours) -}}
{{- fail "operator.certificates.caRenewBeforeHours must be shorter than caLifetimeHours" -}}
{{- end -}}
{{- if lt (int .caLifetimeHours) (int .lifetimeHours) -}}
{{- fail "operator.certificates.caLifetimeHours must be at least lifetimeHours" -}}
{{- end -}}
{{- end -}}
{{- end -}}
