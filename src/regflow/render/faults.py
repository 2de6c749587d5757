"""Named fault points for tests of the commit protocol: :mod:`regflow.storage.faults`."""

from regflow.storage.faults import FAULT_ENV, WAIT_LIMIT_SECONDS, fault_point

__all__ = ["FAULT_ENV", "WAIT_LIMIT_SECONDS", "fault_point"]
