"""The result files of the analyses (ablation, layer transfer, zero-shot): written atomically, read back
without trusting them, and reused only for the settings that produced them."""

from __future__ import annotations

import csv
import io
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from .checkpoint import CONFIG_FILE, WEIGHTS_FILE, resolve_model_dir, write_bytes_atomic
from .errors import UserError


def write_csv_atomic(path: Path, rows: list[dict], first: tuple[str, ...] = ()) -> None:
    """Every field of every row as one CSV file (the `first` columns, then the others by name), replaced
    atomically. A nested `settings` dict becomes columns `settings.<name>`."""
    rows = [flatten_settings(row) for row in rows]
    present = {key for row in rows for key in row}
    fields = [k for k in first if k in present] + sorted(present - set(first))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    write_bytes_atomic(path, text.getvalue().encode("utf-8"))


def flatten_settings(row: dict) -> dict:
    settings = row.get("settings")
    if not isinstance(settings, dict):
        return row
    return {**{k: v for k, v in row.items() if k != "settings"}, **{f"settings.{k}": v for k, v in settings.items()}}


def read_report(path: Path, required: tuple[str, ...] = (), note: bool = True) -> dict | None:
    """The JSON object in `path`, or None when it is absent or unreadable (malformed, not UTF-8, not an object,
    lacking a `required` key): then, with `note`, one line on stderr says so and that the run is redone."""
    path = Path(path)
    try:
        row = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as e:
        problem = f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}"
    except UnicodeDecodeError as e:
        problem = f"not UTF-8 text (byte {e.start})"
    except OSError as e:
        problem = f"cannot read ({e.strerror})"
    else:
        missing = [key for key in required if not isinstance(row, dict) or key not in row]
        if not missing:
            return row
        problem = "not a JSON object" if not isinstance(row, dict) else f"lacks {', '.join(missing)}"
    if note:
        print(f"note: {path}: {problem}; ignored, that run is redone", file=sys.stderr)
    return None


def settings_difference(recorded, expected: dict) -> str:
    """'' when `recorded` equals `expected`, else the differing settings as 'name recorded -> expected', ..."""
    if recorded == expected:
        return ""
    if not isinstance(recorded, dict):
        return "no settings recorded (written by an older gpt1)"
    names = [k for k in expected if recorded.get(k, "<none>") != expected[k]]
    names += [k for k in recorded if k not in expected]
    return ", ".join(f"{k} {recorded.get(k, '<none>')} -> {expected.get(k, '<none>')}" for k in names)


def weights_stamp(model_dir: Path) -> str:
    """The size and modification time of a model folder's weights: a model written again at the same path (a
    run pre-trained anew into the same folder) gets another stamp, so results scored from the old weights are
    not taken for its own."""
    stat = (Path(model_dir) / WEIGHTS_FILE).stat()
    modified = datetime.fromtimestamp(stat.st_mtime_ns // 1000 / 1e6, tz=timezone.utc).isoformat()
    return f"{stat.st_size:,} bytes, modified {modified}"


def model_folder(path: Path) -> Path:
    """The model folder of a model, checkpoint or run folder (its latest checkpoint), resolved to an absolute
    path; a UserError naming it when it holds no model."""
    model = resolve_model_dir(path)
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (model / name).is_file()]
    if missing:
        where = f"{path}" if Path(model) == Path(path) else f"{path} (its latest checkpoint {model})"
        raise UserError(f"{where}: holds no {' or '.join(missing)}, so it is not a model, run or checkpoint folder")
    return model.resolve()
