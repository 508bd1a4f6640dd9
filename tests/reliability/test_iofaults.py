"""I/O faults, CI-sized: ENOSPC and EIO at every file op of a save (sync and async, retention and
incremental links included) and of the event writer, a full and a read-only tmpfs for real, and
a run folder removed under a running job."""

from iofaults import event_writer_faults, real_disk_faults, save_faults


def test_a_fault_at_any_file_op_of_a_save_is_a_clear_error_and_loses_no_checkpoint(tmp_path):
    tally = save_faults(tmp_path, "ci", seed=16)
    tally.check()
    assert tally.tried >= 100


def test_a_fault_in_the_event_writer_is_warned_about_and_training_goes_on(tmp_path):
    tally = event_writer_faults(tmp_path, "ci", seed=16)
    tally.check()
    assert tally.tried >= 12


def test_a_full_or_read_only_disk_and_a_removed_folder_stop_the_run_cleanly(tmp_path):
    tally = real_disk_faults(tmp_path, "ci", seed=16)
    tally.check()
    assert tally.tried >= 1
