//! Analysis: pure functions over decoded events (no I/O, no root), so that live captures and
//! saved JSONL files give the same answers and most logic is tested on recorded fixtures.
