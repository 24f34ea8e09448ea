"""Energy model: the paper's percentages from the 45 nm table (spec §5 oracle 11), op counts, errors."""

import json

import pytest

from paperbricks.lmul.energy import (
    HOROWITZ_45NM,
    EnergyTable,
    dot_energy,
    elementwise_energy,
    matmul_energy,
    paper_percentages,
)


def test_paper_percentages_recomputed():
    p = paper_percentages()
    assert round(p["elementwise_fp16_vs_int16_add"], 1) == 95.5
    assert round(p["elementwise_fp32_vs_int32_add"], 1) == 97.3
    assert round(p["dot_fp32_vs_lmul_int32_fp32_accumulate"], 1) == 78.3
    # closed forms from the table values written out by hand
    assert p["elementwise_fp16_vs_int16_add"] == pytest.approx(100 * (1 - 0.05 / 1.1))
    assert p["dot_fp32_vs_lmul_int32_fp32_accumulate"] == pytest.approx(100 * (1 - 1.0 / 4.6))


def test_table_values_are_horowitz():
    t = EnergyTable.horowitz_45nm()
    assert dict(t.entries) == dict(HOROWITZ_45NM)
    assert (t["fp32_mult"], t["fp32_add"], t["int32_add"], t["fp16_mult"]) == (3.7, 0.9, 0.1, 1.1)
    assert "Horowitz" in t.source and "ISSCC 2014" in t.source


def test_op_counts_and_totals():
    e = matmul_energy(3, 5, 7, "fp16", accumulate="fp32")
    assert e.n_products == e.n_accumulates == 3 * 5 * 7
    assert e.total_pj == pytest.approx(105 * (1.1 + 0.9))
    d = dot_energy(5, "lmul-int32")
    assert d.total_pj == pytest.approx(5 * (0.1 + 0.9))
    # a matmul is M*N dot products
    assert matmul_energy(4, 9, 6, "lmul-int16").total_pj == pytest.approx(
        24 * dot_energy(9, "lmul-int16").total_pj
    )
    assert elementwise_energy(10, "lmul-int8").total_pj == pytest.approx(0.3)
    # the dot-product saving does not depend on K under the MAC convention
    for K in (1, 17, 4096):
        s = dot_energy(K, "lmul-int32").saving_vs(dot_energy(K, "fp32"))
        assert s == pytest.approx(1 - 1.0 / 4.6)
    # counting the offset subtraction as a second add doubles the product cost
    two = elementwise_energy(10, "lmul-int32", adds_per_product=2)
    assert two.total_pj == pytest.approx(2.0)


def test_fp8_needs_an_explicit_number():
    with pytest.raises(KeyError, match="no fp8 costs"):
        elementwise_energy(4, "fp8")
    t = EnergyTable.horowitz_45nm().with_entries(fp8_mult=0.3, note="test value")
    assert elementwise_energy(4, "fp8", table=t).total_pj == pytest.approx(1.2)
    assert "fp8_mult = 0.3 pJ" in t.source and "test value" in t.source
    proxy = EnergyTable.horowitz_45nm().with_fp8_mult_proxy()
    assert proxy["fp8_mult"] == proxy["int8_mult"] == 0.2
    assert "proxy" in proxy.source
    with pytest.raises(KeyError, match="fp8_add"):
        dot_energy(4, "fp8", accumulate="fp8", table=proxy)


def test_json_round_trip_and_user_table(tmp_path):
    path = tmp_path / "t.json"
    data = {"source": "made up", "entries": {"fp32_mult": 2.0, "fp32_add": 1.0, "int32_add": 0.5}}
    path.write_text(json.dumps(data))
    t = EnergyTable.from_json(path)
    assert t.to_dict()["entries"] == data["entries"]
    pct = dot_energy(8, "lmul-int32", table=t).saving_vs(dot_energy(8, "fp32", table=t))
    assert pct == pytest.approx(1 - 1.5 / 3.0)
    with pytest.raises(KeyError, match="fp16_mult"):
        elementwise_energy(1, "fp16", table=t)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: elementwise_energy(0, "fp32"), ValueError, "n: expected an int >= 1"),
        (lambda: dot_energy(4, "int4"), ValueError, "scheme: expected one of"),
        (lambda: dot_energy(4, "fp32", accumulate="fp64"), ValueError, "accumulate"),
        (lambda: matmul_energy(2, 2.5, 2, "fp32"), ValueError, "K: expected"),
        (lambda: elementwise_energy(2, "fp32", adds_per_product=2), ValueError, "lmul"),
        (lambda: elementwise_energy(2, "fp32", table={"a": 1}), TypeError, "table"),
        (lambda: EnergyTable({"fp32_mult": -1.0}, "x"), ValueError, "finite energy"),
        (lambda: EnergyTable({"fp32_mult": 1.0}, ""), ValueError, "source"),
        (lambda: EnergyTable.from_dict({"entries": {}}), ValueError, "source"),
        (
            lambda: EnergyTable.horowitz_45nm().with_entries(fp8_mult=1.0, note=""),
            ValueError,
            "note",
        ),
    ],
)
def test_bad_inputs(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_bad_json(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        EnergyTable.from_json(p)
    with pytest.raises(FileNotFoundError):
        EnergyTable.from_json(tmp_path / "missing.json")
