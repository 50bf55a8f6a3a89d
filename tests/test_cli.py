"""The `ksent` entry point: help, error messages and exit codes."""
from __future__ import annotations

import shutil

from click.testing import CliRunner

from pipeline.apps.cli import cli
from tests.helpers import SHARED_CORPORA, ksent


def test_help_lists_every_stage_with_defaults():
    from pipeline.graph import REGISTRY

    result = ksent("--help")
    assert result.returncode == 0
    out = result.stdout.decode()
    listed = [line.split()[0] for line in out.split("Commands:\n", 1)[1].splitlines() if line.startswith("  ")]
    assert sorted(listed) == sorted(cli.commands)       # the Commands section, one line per command
    assert set(REGISTRY) | {"run", "status", "predict", "serve", "summary", "corpus"} <= set(listed)


def test_every_registered_stage_has_its_generated_command():
    from pipeline.apps.stage_commands import COMMANDS, group_of
    from pipeline.graph import REGISTRY

    assert set(COMMANDS) == set(REGISTRY)
    for name in REGISTRY:               # its parameters are its options (pipeline.params, by the stage's name)
        options = {o for p in cli.commands[name].params for o in p.opts}
        group = group_of(name)
        wanted = set() if group is None or name == "tokenize" else {
            "--" + key.replace("_", "-") for key in group.params if key not in COMMANDS[name].exclude}
        assert wanted <= options, (name, wanted - options)
    pad_help = " ".join(ksent("pad", "--help").stdout.decode().split())  # undo line wrapping
    assert "[default: 30000;" in pad_help and "[default: auto]" in pad_help


def test_one_byte_changed_mirror_fails_with_checksum_message(tmp_path):
    mirror = tmp_path / "mirror" / "nsmc"
    mirror.mkdir(parents=True)
    for name in ("ratings_train.txt", "ratings_test.txt"):
        shutil.copy(SHARED_CORPORA / "nsmc" / name, mirror / name)
    data = bytearray((mirror / "ratings_test.txt").read_bytes())
    data[1000] ^= 0x01
    (mirror / "ratings_test.txt").write_bytes(bytes(data))

    result = ksent("download", "--corpus", "nsmc", "--mirror", str(tmp_path / "mirror"),
                   "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 1
    err = result.stderr.decode()
    assert "Error: ratings_test.txt: checksum mismatch (sha256 expected 8ac9f640" in err
    assert "Traceback" not in err
    raw = tmp_path / "data" / "raw" / "nsmc"
    assert sorted(p.name for p in raw.iterdir()) == ["ratings_train.txt"]   # the good file, verified


def test_unknown_corpus_is_a_usage_error():
    result = CliRunner().invoke(cli, ["clean", "--corpus", "imdb"])
    assert result.exit_code == 2
    assert "unknown corpus 'imdb'; known corpora: naver_shopping, naver_shopping_sample, nsmc" in result.output


def test_stage_without_inputs_says_what_to_run(tmp_path):
    result = CliRunner().invoke(cli, ["dedupe", "--corpus", "nsmc", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "missing input" in result.output and "run the earlier stages first" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_bad_option_values_are_usage_errors(tmp_path):
    runner = CliRunner()
    assert runner.invoke(cli, ["pad", "--corpus", "nsmc", "--maxlen", "long"]).exit_code == 2
    assert runner.invoke(cli, ["split", "--corpus", "nsmc", "--val-ratio", "1.5"]).exit_code == 2
    jamo = runner.invoke(cli, ["tokenize", "--corpus", "nsmc", "--tokenizer", "word", "--jamo"])
    assert jamo.exit_code == 2 and "--jamo applies to --tokenizer char only" in jamo.output


def test_stages_through_the_cli_on_the_fixture_corpus(tmp_path, tiny_corpus):
    runner = CliRunner()
    data = str(tmp_path / "data")
    for args in (["download", "--mirror", str(tiny_corpus)], ["clean"], ["dedupe"], ["split"]):
        result = runner.invoke(cli, [args[0], "--corpus", "tiny", "--data-dir", data, *args[1:]])
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"{args[0]} tiny:")
    again = runner.invoke(cli, ["dedupe", "--corpus", "tiny", "--data-dir", data])
    assert "up to date, skipped" in again.output
    forced = runner.invoke(cli, ["dedupe", "--corpus", "tiny", "--data-dir", data, "--force"])
    assert "up to date" not in forced.output and forced.exit_code == 0


def test_nan_and_inf_are_refused_before_anything_runs(tmp_path):
    data = ["--data-dir", str(tmp_path / "data")]
    for args in (["serve", "--max-wait-ms", "nan", "--model", str(tmp_path)],
                 ["run", "--corpus", "nsmc", "--tokenizer", "word", "--dropout", "nan", *data],
                 ["train", "--corpus", "nsmc", "--learning-rate", "nan", *data],
                 ["split", "--corpus", "nsmc", "--val-ratio", "nan", *data]):
        run = ksent(*args)
        assert run.returncode == 2 and "is not a finite number" in run.stderr.decode(), (args, run.stderr)
    assert not (tmp_path / "data").exists()


def test_help_shows_the_limits_of_numeric_options():
    for command, shown in ((["tokenize"], ["1<=x<=1024", "at most 10 MB"]), (["predict"], ["1<=x<=1024"]),
                           (["clean"], ["0<=x<=1000"]),
                           (["serve"], ["--max-explain", "--shutdown-grace", "0<=x<=3600"])):
        run = ksent(*command, "--help")
        assert run.returncode == 0
        help_text = " ".join(run.stdout.decode().split())       # click wraps lines
        for text in shown:
            assert text in help_text, (command, text)


def test_absurd_numbers_and_files_are_refused_before_anything_runs(tmp_path):
    data = ["--data-dir", str(tmp_path / "data")]
    garbage = tmp_path / "stopwords.txt"
    garbage.write_bytes(b"\xb0\xa1\xff not utf-8")
    huge = tmp_path / "huge.txt"
    huge.write_bytes(b"a\n" * (6 << 20))
    for args, message in (
            (["tokenize", "--corpus", "nsmc", "--workers", "99999999999999999999", *data],
             "not in the range 1<=x<=1024"),
            (["predict", "--workers", "5000", "좋아요"], "not in the range 1<=x<=1024"),
            (["clean", "--corpus", "nsmc", "--squeeze", "5000000000", *data], "not in the range 0<=x<=1000"),
            (["tokenize", "--corpus", "nsmc", "--stopwords", str(garbage), *data], "is not UTF-8 text"),
            (["tokenize", "--corpus", "nsmc", "--stopwords", str(huge), *data], "is larger than 10 MB")):
        run = ksent(*args)
        assert run.returncode == 2 and message in run.stderr.decode(), (args, run.stderr)
        assert "Traceback" not in run.stderr.decode()
    assert not (tmp_path / "data").exists()
