"""Frozen teachers for distillation: one interface (`Teacher.features -> TeacherFeatures`)."""
from zoo.teachers.base import Teacher, TeacherFeatures, pad_features
from zoo.teachers.cache import CachedTeacher, precompute_features, precompute_folder
from zoo.teachers.random import RandomSpeechTeacher, RandomTextTeacher
from zoo.teachers.speech_ssl import SpeechSSLTeacher
from zoo.teachers.text_lm import TextLMTeacher
from zoo.teachers.whisper import TorchWhisperEncoderTeacher, WhisperEncoderTeacher

__all__ = [
    "CachedTeacher", "RandomSpeechTeacher", "RandomTextTeacher", "SpeechSSLTeacher", "Teacher",
    "TeacherFeatures", "TextLMTeacher", "TorchWhisperEncoderTeacher", "WhisperEncoderTeacher", "pad_features", "precompute_features", "precompute_folder",
]
