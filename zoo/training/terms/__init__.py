"""Distillation and regularization terms of codec training, one small module each, listed in
recipes by class_path (`model.init_args.terms`)."""
from zoo.training.terms.base import ContextProjection, TeacherTargets, Term, same_teacher
from zoo.training.terms.speech import GlobalSemanticSupervision, SemanticDistill, SemanticResynthesis
from zoo.training.terms.text import AlignedContextDistill, ContextDistill, GlobalContextSupervision

__all__ = [
    "AlignedContextDistill", "ContextDistill", "ContextProjection", "GlobalContextSupervision",
    "GlobalSemanticSupervision", "SemanticDistill", "SemanticResynthesis", "TeacherTargets", "Term", "same_teacher",
]
