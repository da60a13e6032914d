"""The model catalogue: entries, the download cache (local HTTP server on 127.0.0.1, never the internet), hashes,
archive members, the checks after loading, ``--list-models`` and ``networks.<n>.model``."""

from __future__ import annotations

import hashlib
import io
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

import restorekit
from restorekit import catalogue as cat
from restorekit.cli import main
from restorekit.errors import UserError
from fakes import Server, catalogue_file

RRDB_PARAMS = 398_755  # tests/fixtures/rrdb_x4/official.pth (nf 32, nb 2, gc 16, x4)


@pytest.fixture
def official(fixtures: Path) -> bytes:
    return (fixtures / "rrdb_x4" / "official.pth").read_bytes()


def entry(name: str = "tiny-rrdb", **fields: Any) -> cat.ModelEntry:
    table = {"description": "test", "component": "rrdb", "params": {"variant": "srflow"}, "scale": 4,
             "licence": "MIT", "parameters": RRDB_PARAMS, **fields}
    return cat.ModelEntry.model_validate({"name": name, **table})


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------------------------------
# the packaged catalogue


def test_packaged_catalogue_has_the_published_models_with_sources_and_counts() -> None:
    entries = cat.load_catalogue()
    expected = {
        "srflow-df2k-4x": ("srflow", 4, 39_541_811), "srflow-df2k-8x": ("srflow", 8, 50_821_891),
        "srflow-celeba-8x": ("srflow", 8, 40_030_531), "srflow-rrdb-df2k-4x": ("rrdb", 4, 16_697_987),
        "esrgan-x4": ("rrdb", 4, 16_697_987), "realesrgan-x4plus": ("rrdb", 4, 16_697_987),
        "realesrgan-x2plus": ("rrdb", 2, 16_703_171),
    }
    for name, (component, scale, params) in expected.items():
        e = entries[name]
        assert (e.component, e.scale, e.parameters) == (component, scale, params), name
        assert e.urls and e.licence and e.description
    srflow_zip = "http://data.vision.ee.ethz.ch/alugmayr/SRFlow/pretrained_models.zip"
    assert entries["srflow-df2k-4x"].urls == [srflow_zip]
    assert entries["srflow-rrdb-df2k-4x"].member == "pretrained_models/RRDB_DF2K_4X.pth"
    assert entries["realesrgan-x4plus"].urls == [
        "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth"]
    assert entries["bundled-srflow-x4"].bundled == "bundled-srflow-x4.safetensors"
    assert entries["bundled-rrdb-x4"].bundled == "bundled-rrdb-x4.safetensors"
    text = cat.packaged_catalogue_path().read_text()
    assert text.count("URL source:") >= 3  # every group of URLs says where it comes from


@pytest.mark.parametrize("component", [pytest.param("srflow", marks=pytest.mark.slow), "rrdb"])
def test_the_presets_build_networks_of_the_catalogued_size(registry, component: str) -> None:
    counts: dict[str, tuple[int, int]] = {}  # one meta-device build per distinct architecture (SRFlow: ~1 s each)
    for e in cat.load_catalogue().values():
        if e.preset is None or e.component != component:
            continue
        comp = registry.get("generator", e.component).component
        params = comp.params.model_validate({"preset": e.preset, **e.params})
        key = params.model_dump_json(exclude={"preset", "variant"})
        if key not in counts:
            with torch.device("meta"):
                net = comp.build(params)
            counts[key] = (cat.count_parameters(net), net.scale)
        assert counts[key] == (e.parameters, e.scale), e.name


def test_bad_catalogue_file_is_one_line(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('[models.x]\ndescription = "d"\ncomponent = "rrdb"\nscale = 4\nlicence = "MIT"\n'
                 'urls = ["http://h/x.pth"]\nsha256 = "abc"\n')
    with pytest.raises(UserError, match=r"c\.toml: models\.x\.sha256: sha256 must be 64 hexadecimal digits"):
        cat.read_catalogue_file(p)
    p.write_text('[models.x]\ndescription = "d"\ncomponent = "rrdb"\nscale = 4\nlicence = "MIT"\n')
    with pytest.raises(UserError, match="give either urls"):
        cat.read_catalogue_file(p)


def test_cache_dir_follows_restorekit_home_then_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(cat.ENV_HOME, str(tmp_path / "rk"))
    assert cat.cache_dir() == tmp_path / "rk"
    monkeypatch.delenv(cat.ENV_HOME)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cat.cache_dir() == tmp_path / "xdg" / "restorekit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cat.cache_dir() == Path.home() / ".cache" / "restorekit"


# ----------------------------------------------------------------------------------------------------
# downloads


def test_download_records_the_hash_and_load_by_name_matches_the_official_output(
    tmp_path: Path, server: Server, home: Path, official: bytes, fixtures: Path, registry
) -> None:
    from safetensors.torch import load_file

    e = entry(urls=[server.add("/m/official.pth", official)])
    extra = catalogue_file(tmp_path, e)
    net = restorekit.load("tiny-rrdb", catalogue=extra, registry=registry)
    path = home / "models" / "tiny-rrdb" / "official.pth"
    assert path.read_bytes() == official
    assert cat.read_record(path) == sha(official)
    assert not list(path.parent.glob("*.part")) and not list(path.parent.glob(".*tmp"))
    assert cat.count_parameters(net) == RRDB_PARAMS
    expected = load_file(str(fixtures / "rrdb_x4" / "expected.safetensors"))
    with torch.no_grad():
        out = net(expected["lr"])
    assert (out - expected["out"]).abs().max().item() <= 1e-4 * max(1.0, expected["out"].abs().max().item())


def test_interrupted_download_keeps_the_part_and_resumes_with_a_range_request(
    server: Server, home: Path, official: bytes
) -> None:
    e = entry(urls=[server.add("/official.pth", official)])
    server.httpd.drops["/official.pth"] = 1
    with pytest.raises(UserError) as info:
        cat.fetch(e, retries=0)
    msg = str(info.value)
    assert "interrupted after 100,000 of 819,289 bytes" in msg and "run again to resume" in msg
    part = home / "models" / "tiny-rrdb" / "official.pth.part"
    assert part.stat().st_size == 100_000 and not cat.model_path(e).exists()
    path = cat.fetch(e, retries=0)
    assert server.requests[-1] == ("/official.pth", "bytes=100000-")
    assert path.read_bytes() == official and not part.exists()
    assert cat.read_record(path) == sha(official)  # the hash covers the resumed bytes too


def test_a_dropped_connection_is_retried_in_the_same_call(server: Server, home: Path, official: bytes) -> None:
    e = entry(urls=[server.add("/official.pth", official)], sha256=sha(official))
    server.httpd.drops["/official.pth"] = 2
    assert cat.fetch(e).read_bytes() == official
    assert [r for _, r in server.requests] == [None, "bytes=100000-", "bytes=200000-"]


def test_a_server_without_ranges_restarts_the_download(server: Server, home: Path, official: bytes) -> None:
    server.httpd.ranges = False
    e = entry(urls=[server.add("/official.pth", official)], sha256=sha(official))
    server.httpd.drops["/official.pth"] = 1
    assert cat.fetch(e).read_bytes() == official
    assert server.requests[1][1] == "bytes=100000-"  # asked to resume, got 200: started again


def test_wrong_hash_is_rejected_and_the_download_deleted(server: Server, home: Path, official: bytes) -> None:
    e = entry(urls=[server.add("/official.pth", official)], sha256="0" * 64)
    with pytest.raises(UserError, match=f"wrong sha256 {sha(official)} \\(expected 0{{64}}\\)"):
        cat.fetch(e)
    folder = home / "models" / "tiny-rrdb"
    assert list(folder.iterdir()) == []


def test_wrong_size_is_rejected(server: Server, home: Path, official: bytes) -> None:
    e = entry(urls=[server.add("/official.pth", official)], size=len(official) + 1)
    with pytest.raises(UserError, match="downloaded 819,289 bytes, expected 819,290"):
        cat.fetch(e)
    assert not cat.model_path(e).exists()


def test_404_and_offline_are_one_line_naming_the_url_and_the_path(
    tmp_path: Path, server: Server, home: Path, sample_png, capsys, monkeypatch: pytest.MonkeyPatch, registry
) -> None:
    url = server.url("/gone.pth")
    monkeypatch.setenv(cat.ENV_CATALOGUE, str(catalogue_file(tmp_path, entry("gone", urls=[url]))))
    img = sample_png()
    dest = home / "models" / "gone" / "gone.pth"
    code = main(["--input", str(img), "--model", "gone", "--output", str(tmp_path / "o")], registry=registry)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err == f"restore-run: error: cannot download {url}: HTTP 404 Not Found; download it by hand and put it at {dest}\n"
    server.stop()
    code = main(["--input", str(img), "--model", "gone", "--output", str(tmp_path / "o")], registry=registry)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"restore-run: error: cannot download {url}: cannot connect (") and str(dest) in err


def test_mirrors_are_tried_in_order(server: Server, home: Path, official: bytes) -> None:
    e = entry(urls=[server.url("/missing.pth"), server.add("/official.pth", official)], file="official.pth")
    assert cat.fetch(e).read_bytes() == official
    assert [p for p, _ in server.requests] == ["/missing.pth", "/official.pth"]


def _zip(**members: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_a_dead_release_falls_back_to_a_single_file_mirror(server: Server, home: Path, official: bytes,
                                                           registry) -> None:
    """The official zip answers 404 (as SRFlow's has since 2024): the first mirror that answers wins."""
    e = entry(urls=[server.url("/release.zip")], member="pretrained_models/official.pth", mirrors=[
        {"url": server.url("/gone.pth")},
        {"url": server.add("/drive/download", official), "origin": "a copy someone posted"},
        {"url": server.add("/later.pth", b"never asked")},
    ])
    path = cat.fetch(e)
    assert path == home / "models" / "tiny-rrdb" / "official.pth" and path.read_bytes() == official
    assert [p for p, _ in server.requests] == ["/release.zip", "/gone.pth", "/drive/download"]
    assert cat.read_record(path) == sha(official)
    # loaded by name: the parameter count of the entry is checked as for any source
    net = restorekit.load("tiny-rrdb", catalogue=catalogue_file(home.parent, e), registry=registry)
    assert cat.count_parameters(net) == RRDB_PARAMS and len(server.requests) == 3  # the cache: no request


def test_a_mirror_can_be_a_zip_member(server: Server, home: Path, official: bytes) -> None:
    url = server.add("/mirror/download", _zip(**{"copy/official.pth": official, "copy/other.pth": b"x"}))
    e = entry(urls=[server.url("/release.zip")], member="pretrained_models/official.pth",
              mirrors=[{"url": url, "member": "official.pth", "sha256": sha(_zip(**{"copy/official.pth": official,
                                                                                    "copy/other.pth": b"x"}))}])
    assert cat.fetch(e).read_bytes() == official
    assert cat.mirror_archive_path(url).is_file() and cat.mirror_archive_path(url).name.endswith("-download")


def test_a_mirror_with_the_wrong_weights_passes_to_the_next(server: Server, home: Path, official: bytes) -> None:
    e = entry(weights_sha256=sha(official), file="official.pth", mirrors=[
        {"url": server.add("/wrong.pth", b"not the weights")},
        {"url": server.add("/right.pth", official)},
    ])
    assert cat.fetch(e).read_bytes() == official
    assert [p for p, _ in server.requests] == ["/wrong.pth", "/right.pth"]
    # a later use checks the cached file against weights_sha256 too
    cat.model_path(e).write_bytes(b"tampered")
    with pytest.raises(UserError, match="does not match the published"):
        cat.fetch(e)


def test_no_source_delivering_is_one_line_naming_each_and_the_place_by_hand(server: Server, home: Path) -> None:
    e = entry(urls=[server.url("/release.zip")], member="pretrained_models/official.pth", mirrors=[
        {"url": server.add("/page", b"<html>sign in</html>", "text/html")},
        {"url": server.url("/gone.pth")},
    ])
    with pytest.raises(UserError) as info:
        cat.fetch(e)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("model 'tiny-rrdb': none of its 3 sources delivered the weights: (1) ")
    assert "/release.zip: HTTP 404" in msg and "(2) " in msg and "a web page" in msg and "(3) " in msg
    assert msg.endswith(f"put it at {cat.model_path(e)}") and msg.count("by hand") == 1
    assert not cat.model_path(e).exists()


def test_mirror_fields_are_checked() -> None:
    with pytest.raises(Exception, match="only http, https and file URLs"):
        entry(mirrors=[{"url": "ftp://x/y.pth"}])
    with pytest.raises(Exception, match="a mirror has its own"):
        entry(member="a.pth", mirrors=[{"url": "http://127.0.0.1:9/a.zip"}])
    assert entry(mirrors=[{"url": "http://127.0.0.1:9/dl?id=1"}], file="w.pth").filename == "w.pth"


def test_the_srflow_entries_list_their_mirrors_and_say_where_they_come_from() -> None:
    entries = cat.load_catalogue()
    for name, file_id in (("srflow-df2k-4x", "1IGiAudmkQibuUMhADDEC9NEfECsEhoSJ"),
                          ("srflow-rrdb-df2k-4x", "11yA6cIHpagTr9q0bL3bY9Qif4JSqupIf")):
        (m,) = entries[name].mirrors
        assert f"id={file_id}" in m.url and m.member is None and "liyuantsao/BFSR" in m.origin
        assert [s.urls[0] for s in cat.sources(entries[name])] == [entries[name].urls[0], m.url]
    docs = (Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text()
    assert "1IGiAudmkQibuUMhADDEC9NEfECsEhoSJ" in docs and "yhjo09/SRFlow-DA" in docs and "OneDrive" in docs


def test_a_web_page_instead_of_the_file_is_refused(server: Server, home: Path) -> None:
    e = entry(urls=[server.add("/uc", b"<html>confirm</html>", "text/html; charset=utf-8")], file="x.pth")
    with pytest.raises(UserError, match="the server sent a web page, not the file"):
        cat.fetch(e)
    assert not cat.model_path(e).exists()


def test_zip_member_is_extracted_alone_and_the_archive_kept(server: Server, home: Path, official: bytes) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("pretrained_models/official.pth", official)
        z.writestr("pretrained_models/other.pth", b"x" * 1000)
    url = server.add("/pretrained_models.zip", buf.getvalue())
    e = entry(urls=[url], member="pretrained_models/official.pth")
    path = cat.fetch(e)
    assert path == home / "models" / "tiny-rrdb" / "official.pth" and path.read_bytes() == official
    assert cat.read_record(path) == sha(official)
    assert (home / "downloads" / "pretrained_models.zip").read_bytes() == buf.getvalue()
    assert sorted(p.name for p in (home / "models").rglob("*")) == ["official.pth", "official.pth.sha256", "tiny-rrdb"]
    # a second entry from the same archive reuses it (member found by its file name too): no new request
    other = entry("other", urls=[url], member="other.pth", parameters=None)
    assert cat.fetch(other).read_bytes() == b"x" * 1000 and len(server.requests) == 1


def test_cache_hit_needs_no_network(tmp_path: Path, server: Server, home: Path, official: bytes, registry) -> None:
    e = entry(urls=[server.add("/official.pth", official)])
    extra = catalogue_file(tmp_path, e)
    restorekit.load("tiny-rrdb", catalogue=extra, registry=registry)
    server.stop()
    net = restorekit.load("tiny-rrdb", catalogue=extra, registry=registry)
    assert cat.count_parameters(net) == RRDB_PARAMS and len(server.requests) == 1


def test_a_file_put_by_hand_is_used_and_its_hash_recorded(home: Path, official: bytes) -> None:
    e = entry(urls=["http://127.0.0.1:9/never.pth"], file="official.pth")
    dest = cat.model_path(e)
    dest.parent.mkdir(parents=True)
    dest.write_bytes(official)
    assert cat.fetch(e) == dest and cat.read_record(dest) == sha(official)


def test_a_folder_where_the_hash_record_goes_is_one_line(home: Path, official: bytes) -> None:
    e = entry(urls=["http://127.0.0.1:9/never.pth"], file="official.pth")
    dest = cat.model_path(e)
    dest.parent.mkdir(parents=True)
    dest.write_bytes(official)
    cat.record_path(dest).mkdir()
    with pytest.raises(UserError, match=r"official\.pth\.sha256: cannot record the sha256"):
        cat.fetch(e)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["official.pth", "official.pth.sha256"]


def test_recorded_hash_mismatch_on_later_use(server: Server, home: Path, official: bytes) -> None:
    e = entry(urls=[server.add("/official.pth", official)])
    path = cat.fetch(e)
    data = bytearray(official)
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match=f"{path}: sha256 [0-9a-f]{{64}} differs from {sha(official)} recorded"):
        cat.fetch(e)


def test_published_hash_mismatch_on_later_use(server: Server, home: Path, official: bytes) -> None:
    e = entry(urls=[server.add("/official.pth", official)], sha256=sha(official))
    path = cat.fetch(e)
    path.write_bytes(official[:-1])
    with pytest.raises(UserError, match="does not match the published"):
        cat.fetch(e)


# ----------------------------------------------------------------------------------------------------
# checks after loading


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"parameters": RRDB_PARAMS + 1}, "network has 398,755 parameters, but catalogue entry 'tiny-rrdb' says 398,756"),
        ({"scale": 2}, "network scale is x4, but catalogue entry 'tiny-rrdb' says x2"),
        ({"component": "srflow", "params": {}}, "holds a 'rrdb' network, but catalogue entry 'tiny-rrdb' says 'srflow'"),
    ],
)
def test_architecture_and_parameter_count_are_checked_after_loading(
    tmp_path: Path, server: Server, home: Path, official: bytes, registry, fields: dict[str, Any], message: str
) -> None:
    e = entry(urls=[server.add("/official.pth", official)], **fields)
    with pytest.raises(UserError) as info:
        restorekit.load("tiny-rrdb", catalogue=catalogue_file(tmp_path, e), registry=registry)
    assert str(info.value) == f"{home / 'models' / 'tiny-rrdb' / 'official.pth'}: {message}"


def test_unknown_name_suggests_a_close_one(registry) -> None:
    with pytest.raises(UserError, match=r"unknown model 'srflow-df2k4x' \(did you mean 'srflow-df2k-4x'\?\)"):
        restorekit.load("srflow-df2k4x", registry=registry)


def test_cache_folder_under_a_file_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, registry) -> None:
    """$RESTOREKIT_HOME naming a file: a UserError before any download, not NotADirectoryError."""
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv(cat.ENV_HOME, str(tmp_path / "afile"))
    entry = cat.lookup("realesrgan-x4plus", cat.load_catalogue(registry=registry))
    with pytest.raises(UserError, match=r"model cache .*afile.*: lies under a file, not a folder"):
        cat.fetch(entry)


@pytest.mark.parametrize("name", ["", "  "])
def test_empty_name_is_a_user_error(registry, name: str) -> None:
    with pytest.raises(UserError, match="empty model name"):
        restorekit.load(name, registry=registry)


# ----------------------------------------------------------------------------------------------------
# bundled models


def test_bundled_entries_load_from_the_package_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, home: Path, registry
) -> None:
    from restorekit import save_generator
    from restorekit_rrdb import RRDBParams, build_rrdb

    params = RRDBParams(nf=8, nb=1, gc=4, scale=4)
    net = build_rrdb(params)
    folder = tmp_path / "pkg_models"
    folder.mkdir()
    save_generator(folder / "b.safetensors", net, "rrdb", params.model_dump())
    monkeypatch.setattr(cat.cache, "bundled_dir", lambda: folder)  # where model_path looks it up
    e = entry("b", bundled="b.safetensors", params={}, parameters=cat.count_parameters(net))
    extra = catalogue_file(tmp_path, e)
    loaded = restorekit.load("b", catalogue=extra, registry=registry)
    lr = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(lr), net.eval()(lr))
    assert not home.exists()  # nothing downloaded, nothing cached
    (folder / "b.safetensors").unlink()
    with pytest.raises(UserError, match="bundled file .*b.safetensors is missing from this installation"):
        restorekit.load("b", catalogue=extra, registry=registry)


@pytest.mark.parametrize("name", ["bundled-rrdb-x4", "bundled-srflow-x4"])
def test_packaged_bundled_models_load_offline(name: str, registry, home: Path) -> None:
    e = cat.load_catalogue()[name]
    if not cat.model_path(e).is_file():
        pytest.skip(f"{cat.model_path(e)} not trained yet")
    net = restorekit.load(name, registry=registry, fast=False)  # no layout probe here: test_bundled_models
    assert net.scale == 4 and cat.model_path(e).stat().st_size <= 11_000_000
    assert not home.exists()


# ----------------------------------------------------------------------------------------------------
# plugins, overrides, listing


class CataloguePlugin:
    def __init__(self, path: Path) -> None:
        self.path = path

    @restorekit.hookimpl
    def restorekit_catalogue(self) -> list[Any]:
        return [
            restorekit.ModelEntry(name="plug-a", description="a", component="rrdb", scale=4, licence="MIT",
                                  urls=["http://127.0.0.1:9/a.pth"]),
            {"name": "plug-b", "description": "b", "component": "rrdb", "scale": 2, "licence": "MIT",
             "urls": ["http://127.0.0.1:9/b.pth"]},
            self.path,
        ]


def test_plugins_and_files_add_and_replace_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry, capsys, home: Path
) -> None:
    plugin_file = tmp_path / "plugin" / "cat.toml"
    plugin_file.parent.mkdir()
    plugin_file.write_text('[models.plug-c]\ndescription = "c"\ncomponent = "rrdb"\nscale = 4\nlicence = "MIT"\n'
                           'urls = ["http://127.0.0.1:9/c.pth"]\n')
    registry.register(CataloguePlugin(plugin_file), "catplug")
    entries = cat.load_catalogue(registry=registry)
    assert {"plug-a", "plug-b", "plug-c", "srflow-df2k-4x"} <= set(entries)
    assert entries["plug-b"].scale == 2 and entries["plug-c"].source == str(plugin_file)
    override = tmp_path / "mine.toml"
    override.write_text('[models.plug-a]\ndescription = "mine"\ncomponent = "rrdb"\nscale = 4\nlicence = "MIT"\n'
                        'urls = ["http://127.0.0.1:9/mine.pth"]\n')
    monkeypatch.setenv(cat.ENV_CATALOGUE, str(override))
    code = main(["--list-models", "--json"], registry=registry)
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["models"]}
    assert code == 0 and rows["plug-a"]["description"] == "mine" and rows["plug-c"]["scale"] == 4


def test_list_models_shows_scale_size_cache_state_and_licence(
    tmp_path: Path, server: Server, home: Path, official: bytes, registry, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    e = entry(urls=[server.add("/official.pth", official)])
    monkeypatch.setenv(cat.ENV_CATALOGUE, str(catalogue_file(tmp_path, e)))
    code = main(["--list-models"], registry=registry)
    out = capsys.readouterr().out
    assert code == 0 and out.splitlines()[0].split() == ["name", "scale", "size", "cached", "licence", "description"]
    row = next(ln for ln in out.splitlines() if ln.startswith("tiny-rrdb "))
    assert row.split()[1:5] == ["x4", "~1.6", "MB", "no"]
    assert next(ln for ln in out.splitlines() if ln.startswith("srflow-df2k-4x ")).split()[1:4] == ["x4", "~158", "MB"]
    cat.fetch(e)
    main(["--list-models", "--json"], registry=registry)
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["models"]}
    assert rows["tiny-rrdb"]["cached"] is True and rows["tiny-rrdb"]["bytes"] == len(official)
    assert rows["realesrgan-x4plus"]["licence"] == "BSD-3-Clause" and rows["realesrgan-x4plus"]["cached"] is False
    # --json FILE writes the same JSON there (the listing commands used to ignore FILE)
    assert main(["--list-models", "--json", str(tmp_path / "models.json")], registry=registry) == 0
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'models.json'}"
    assert {r["name"]: r for r in json.loads((tmp_path / "models.json").read_text())["models"]} == rows


# ----------------------------------------------------------------------------------------------------
# networks.<n>.model in a pipeline


def test_spec_network_model_downloads_and_runs(
    tmp_path: Path, server: Server, home: Path, official: bytes, sample_png, registry, capsys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    e = entry(urls=[server.add("/o.pth", official)], preset="srflow-rrdb",
              params={"nf": 32, "nb": 2, "gc": 16})  # a preset: the plan needs no file, the download waits for the run
    monkeypatch.setenv(cat.ENV_CATALOGUE, str(catalogue_file(tmp_path, e)))
    img = sample_png(size=12)
    spec = tmp_path / "p.toml"
    spec.write_text(f'[run]\nmode = "infer"\ndevice = "cpu"\noutput_dir = "{tmp_path / "run"}"\n'
                    '[networks.generator]\nmodel = "tiny-rrdb"\n'
                    f'[infer]\ninputs = ["{img}"]\noutput_dir = "{tmp_path / "out"}"\n')
    code = main([str(spec), "--dry-run"], registry=registry)
    out = capsys.readouterr().out
    assert code == 0 and "model=tiny-rrdb" in out and "398,755 parameters" in out
    assert server.requests == []  # a dry run downloads nothing
    code = main([str(spec)], registry=registry)
    assert code == 0, capsys.readouterr().err
    import imageio.v3 as iio

    assert iio.imread(tmp_path / "out" / f"{img.stem}.png").shape == (48, 48, 3)


@pytest.mark.parametrize(
    ("net", "message"),
    [
        ('model = "tiny-rrdb"\ncheckpoint = "x.pth"\n',
         "p.toml: networks.generator: give either model (a catalogue name) or checkpoint (a file), not both"),
        ('model = "tiny-rdb"\n', "p.toml: networks.generator.model: unknown model 'tiny-rdb' (did you mean 'tiny-rrdb'?)"),
        ('model = "tiny-rrdb"\ncomponent = "srflow"\n',
         "p.toml: networks.generator.component: 'srflow', but model 'tiny-rrdb' is a 'rrdb' network"),
        ("preset = \"esrgan-x4\"\n", "p.toml: networks.generator: component is required (or give model"),
    ],
)
def test_spec_network_model_bad_input_is_one_line(
    tmp_path: Path, registry, capsys, monkeypatch: pytest.MonkeyPatch, home: Path, net: str, message: str
) -> None:
    monkeypatch.setenv(cat.ENV_CATALOGUE, str(catalogue_file(tmp_path, entry(urls=["http://127.0.0.1:9/o.pth"]))))
    spec = tmp_path / "p.toml"
    spec.write_text(f'[run]\nmode = "infer"\n[networks.generator]\n{net}[infer]\ninputs = ["in"]\n')
    code = main([str(spec)], registry=registry)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_an_entry_for_a_component_not_installed_downloads_nothing(
    tmp_path: Path, server: Server, home: Path, official: bytes, registry, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a plugin's catalogue entry whose generator is not installed: one line before any request
    e = entry("edsr-x4", component="edsr", params={}, urls=[server.add("/edsr.pth", official)])
    monkeypatch.setenv(cat.ENV_CATALOGUE, str(catalogue_file(tmp_path, e)))
    with pytest.raises(UserError, match="edsr-x4: catalogue entry needs the generator 'edsr', which no installed"):
        restorekit.load("edsr-x4", registry=registry)
    spec = tmp_path / "p.toml"
    spec.write_text('[run]\nmode = "infer"\n[networks.generator]\nmodel = "edsr-x4"\n[infer]\ninputs = ["in"]\n')
    assert main([str(spec)], registry=registry) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "p.toml: networks.generator.model:" in err and "'edsr'" in err, err
    assert server.requests == [] and not home.exists()


def test_official_format_srflow_from_a_zip_end_to_end(
    tmp_path: Path, server: Server, home: Path, fixtures: Path, sample_png, registry, capsys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An SRFlow checkpoint in the official layout, inside a zip like the SRFlow release: one command downloads,
    extracts, loads (params read off the tensors), checks the parameter count and super-resolves."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("pretrained_models/SRFlow_fixture_4X.pth", (fixtures / "srflow_x4" / "official.pth").read_bytes())
        z.writestr("pretrained_models/RRDB_fixture_4X.pth", (fixtures / "rrdb_x4" / "official.pth").read_bytes())
    e = cat.ModelEntry(name="srflow-fixture", description="fixture", component="srflow", scale=4, licence="test",
                       parameters=6_144_851, urls=[server.add("/pretrained_models.zip", buf.getvalue())],
                       member="pretrained_models/SRFlow_fixture_4X.pth")
    monkeypatch.setenv(cat.ENV_CATALOGUE, str(catalogue_file(tmp_path, e)))
    img = sample_png(size=8)
    code = main(["--model", "srflow-fixture", "--input", str(img), "--output", str(tmp_path / "o"), "--device", "cpu"],
                registry=registry)
    assert code == 0, capsys.readouterr().err
    import imageio.v3 as iio

    assert iio.imread(tmp_path / "o" / f"{img.stem}.png").shape == (32, 32, 3)
    assert (home / "models" / "srflow-fixture" / "SRFlow_fixture_4X.pth").is_file()
    assert not (home / "models" / "srflow-fixture" / "RRDB_fixture_4X.pth").exists()


def test_a_component_that_contradicts_the_catalogue_entry_is_one_line() -> None:
    from restorekit import load

    with pytest.raises(UserError, match=r"^bundled-rrdb-x4: 'srflow', but model 'bundled-rrdb-x4' is a 'rrdb' network$"):
        load("bundled-rrdb-x4", component="srflow")


class BrokenCataloguePlugin:
    @restorekit.hookimpl
    def restorekit_catalogue(self) -> list[Any]:
        raise RuntimeError("no network")


def test_a_broken_catalogue_hook_breaks_only_its_plugin_and_is_traced(registry, capsys) -> None:
    # collected by the registry like the component hooks: the other entries stay, the plugin shows as broken
    registry.register(BrokenCataloguePlugin(), "badcat")
    registry.pm.trace.root.setwriter(print)
    registry.pm.enable_tracing()
    entries = cat.load_catalogue(registry=registry)
    assert "bundled-srflow-x4" in entries and "restorekit_catalogue" in capsys.readouterr().out
    info = registry.plugins["badcat"]
    assert info.status == "broken" and info.reason == "restorekit_catalogue failed: RuntimeError: no network"
