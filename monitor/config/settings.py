"""The whole settings tree: YAML file + `MONITOR_...` environment overrides (nested with `__`)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from monitor.config.checks import cross_field_errors, rebuildable
from monitor.config.sections import (
    AlertRule,
    CameraConfig,
    CapturesConfig,
    ClusterConfig,
    DescriberConfig,
    GateConfig,
    HttpConfig,
    JobsConfig,
    LogConfig,
    MqttConfig,
    RedisConfig,
    ReviewConfig,
)
from monitor.config.yaml_source import YamlSource


class MonitorSettings(BaseSettings):
    """The whole configuration."""

    model_config = SettingsConfigDict(env_prefix="MONITOR_", env_nested_delimiter="__", extra="forbid")

    cameras: list[CameraConfig] = Field(default_factory=list)
    gate: GateConfig = Field(default_factory=GateConfig)
    describer: DescriberConfig = Field(default_factory=DescriberConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    redis: RedisConfig = Field(default_factory=RedisConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    alerts: list[AlertRule] = Field(default_factory=list)
    http: HttpConfig = Field(default_factory=HttpConfig)
    captures: CapturesConfig = Field(default_factory=CapturesConfig)
    jobs: JobsConfig = Field(default_factory=JobsConfig)
    review: ReviewConfig = Field(default_factory=ReviewConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)

    @model_validator(mode="wrap")
    @classmethod
    def _unique_and_valid_overrides(cls, data: Any, handler: Any) -> MonitorSettings:
        # Checked on the raw input so these errors are listed together with every other one
        # (an "after" validator would only run once all fields are valid).
        extra = cross_field_errors(data) if isinstance(data, dict) else []
        try:
            settings = handler(data)
        except ValidationError as exc:
            if not extra:
                raise
            raise ValidationError.from_exception_data(exc.title, rebuildable([*exc.errors(), *extra])) from None
        if extra:
            raise ValidationError.from_exception_data(cls.__name__, rebuildable(extra))
        return settings

    def gate_for(self, camera: CameraConfig) -> GateConfig:
        return GateConfig.model_validate({**self.gate.model_dump(), **camera.gate})

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Command-line values beat the environment, which beats the YAML file.
        return (init_settings, env_settings, YamlSource(settings_cls))
