//! Unit tests of the BTF reader on hand-built blobs (`build`) and on the running kernel's BTF.
use super::build::Builder;
use super::*;

/// A 6.9-style `struct file_lock { struct file_lock_core c; loff_t fl_start; ... }` with an
/// anonymous union inside, a typedef'd pointer and a tracepoint prototype.
fn sample() -> Vec<u8> {
    let mut b = Builder::new();
    let uint = b.int("unsigned int", 4);
    let uchar = b.int("unsigned char", 1);
    let ll = b.int("long long", 8);
    let loff = b.typedef("loff_t", ll);
    let void_ptr = b.ptr(0);
    let owner_t = b.typedef("fl_owner_t", void_ptr);
    let char_t = b.int("char", 1);
    let comm = b.array(char_t, uint, 16);
    // struct file_lock_core (forward id: core_ptr points at the next id).
    let core_id = b.next_id();
    let core_ptr_placeholder = core_id + 1; // the pointer type defined right after
    let _core = b.composite(
        false,
        "file_lock_core",
        40,
        &[
            ("flc_blocker", core_ptr_placeholder, 0, 0),
            ("flc_owner", owner_t, 64, 0),
            ("flc_flags", uint, 128, 0),
            ("flc_type", uchar, 160, 0),
            ("flc_bits", uint, 168, 3),
            ("flc_comm", comm, 192, 0),
        ],
    );
    let core_ptr = b.ptr(core_id);
    assert_eq!(core_ptr, core_ptr_placeholder);
    let anon = b.composite(true, "", 8, &[("fl_u1", ll, 0, 0), ("fl_u2", uint, 0, 0)]);
    let fl = b.composite(
        false,
        "file_lock",
        64,
        &[
            ("c", core_id, 0, 0),
            ("fl_start", loff, 320, 0),
            ("fl_end", loff, 384, 0),
            ("", anon, 448, 0),
        ],
    );
    let fl_ptr = b.ptr(fl);
    let int = b.int("int", 4);
    let inode = b.composite(false, "inode", 8, &[("i_ino", ll, 0, 0)]);
    let inode_ptr = b.ptr(inode);
    let proto = b.func_proto(0, &[void_ptr, inode_ptr, fl_ptr, int]);
    let proto_ptr = b.ptr(proto);
    b.typedef("btf_trace_posix_lock_inode", proto_ptr);
    b.bytes()
}

#[test]
fn members_are_found_through_nested_and_anonymous_members() {
    let btf = Btf::parse(&sample()).unwrap();
    let f = |p| btf.field("file_lock", p).map(|f| (f.offset, f.size));
    assert_eq!(f("c.flc_blocker"), Some((0, 8)));
    assert_eq!(f("c.flc_owner"), Some((8, 8)));
    assert_eq!(f("c.flc_flags"), Some((16, 4)));
    assert_eq!(f("c.flc_type"), Some((20, 1)));
    assert_eq!(f("c.flc_comm"), Some((24, 16)));
    assert_eq!(f("fl_start"), Some((40, 8)));
    assert_eq!(f("fl_end"), Some((48, 8)));
    // Members of an anonymous union are members of the struct.
    assert_eq!(f("fl_u2"), Some((56, 4)));
    // Bitfields are refused; absent names are None.
    assert_eq!(f("c.flc_bits"), None);
    assert_eq!(f("fl_flags"), None);
    assert_eq!(btf.field("nosuch", "x"), None);
    let (field, which) = btf
        .field_any("file_lock", &["fl_flags", "c.flc_flags"])
        .unwrap();
    assert_eq!((field.offset, which), (16, 1));
}

#[test]
fn tracepoint_prototypes_skip_the_hidden_data_pointer() {
    let btf = Btf::parse(&sample()).unwrap();
    let args = btf.tracepoint_args("posix_lock_inode").unwrap();
    assert_eq!(args.len(), 3);
    assert!(args[0].is_ptr_to("inode"));
    assert!(args[1].is_ptr_to("file_lock"));
    assert_eq!(args[2], Arg::Scalar(4));
    assert!(btf.tracepoint_args("sched_switch").is_none());
}

#[test]
fn bad_blobs_are_errors_not_panics() {
    let good = sample();
    assert!(matches!(Btf::parse(&[]), Err(BtfError::Truncated(_))));
    assert!(matches!(Btf::parse(&[0u8; 24]), Err(BtfError::BadMagic(0))));
    // Every prefix of a good blob either parses or fails cleanly.
    for n in 0..good.len() {
        let _ = Btf::parse(&good[..n]);
    }
    // A record cut inside the type section.
    let mut cut = good.clone();
    let tl = u32::from_le_bytes(cut[12..16].try_into().unwrap());
    cut[12..16].copy_from_slice(&(tl - 4).to_le_bytes());
    assert!(Btf::parse(&cut).is_err());
    // Flipped bytes anywhere never panic.
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0xa5;
        if let Ok(b) = Btf::parse(&bad) {
            let _ = b.field("file_lock", "c.flc_flags");
            let _ = b.tracepoint_args("posix_lock_inode");
        }
    }
}

/// Just the types the fast programs read, laid out as 6.1 (`fl_*` members of `struct
/// file_lock`, `task_struct.state` of 8 bytes, 3-argument sched_switch) or as 6.9+ (`struct
/// file_lock_core c`, `__state`, 4 arguments), at made-up offsets.
fn kernel_like(new: bool) -> Vec<u8> {
    let mut b = Builder::new();
    let uint = b.int("unsigned int", 4);
    let int = b.int("int", 4);
    let uchar = b.int("unsigned char", 1);
    let boolean = b.int("_Bool", 1);
    let long = b.int("long", 8);
    let void_ptr = b.ptr(0);
    let char_t = b.int("char", 1);
    let comm = b.array(char_t, uint, 16);
    let fop = b.composite(false, "file_operations", 64, &[("lock", void_ptr, 128, 0)]);
    let fop_ptr = b.ptr(fop);
    let file = b.composite(false, "file", 64, &[("f_op", fop_ptr, 320, 0)]);
    let file_ptr = b.ptr(file);
    let generic = [
        ("blocker", void_ptr, 0u32),
        ("owner", void_ptr, 320),
        ("flags", uint, 384),
        ("type", uchar, 416),
        ("pid", int, 448),
        ("file", file_ptr, 512),
    ];
    let fl = if new {
        let members: Vec<(String, u32, u32, u32)> = generic
            .iter()
            .map(|&(n, t, o)| (format!("flc_{n}"), t, o, 0))
            .collect();
        let m: Vec<(&str, u32, u32, u32)> = members
            .iter()
            .map(|(n, t, o, x)| (n.as_str(), *t, *o, *x))
            .collect();
        let core = b.composite(false, "file_lock_core", 128, &m);
        b.composite(
            false,
            "file_lock",
            192,
            &[
                ("c", core, 0, 0),
                ("fl_start", long, 1024, 0),
                ("fl_end", long, 1088, 0),
            ],
        )
    } else {
        let mut members: Vec<(String, u32, u32, u32)> = generic
            .iter()
            .map(|&(n, t, o)| (format!("fl_{n}"), t, o, 0))
            .collect();
        members.push(("fl_start".into(), long, 1024, 0));
        members.push(("fl_end".into(), long, 1088, 0));
        let m: Vec<(&str, u32, u32, u32)> = members
            .iter()
            .map(|(n, t, o, x)| (n.as_str(), *t, *o, *x))
            .collect();
        b.composite(false, "file_lock", 192, &m)
    };
    let fl_ptr = b.ptr(fl);
    let sb = b.composite(false, "super_block", 64, &[("s_dev", uint, 128, 0)]);
    let sb_ptr = b.ptr(sb);
    let inode = b.composite(
        false,
        "inode",
        128,
        &[("i_sb", sb_ptr, 320, 0), ("i_ino", long, 512, 0)],
    );
    let inode_ptr = b.ptr(inode);
    let ti = b.composite(
        false,
        "thread_info",
        24,
        &[("flags", long, 0, 0), ("cpu", uint, 128, 0)],
    );
    let (state_name, state_ty) = if new {
        ("__state", uint)
    } else {
        ("state", long)
    };
    let task = b.composite(
        false,
        "task_struct",
        8192,
        &[
            ("thread_info", ti, 0, 0),
            (state_name, state_ty, 192, 0),
            ("prio", int, 896, 0),
            ("exit_state", int, 9600, 0),
            ("pid", int, 9728, 0),
            ("tgid", int, 9760, 0),
            ("comm", comm, 24576, 0),
        ],
    );
    let task_ptr = b.ptr(task);
    let tp = |b: &mut Builder, name: &str, args: &[u32]| {
        let mut params = vec![void_ptr];
        params.extend_from_slice(args);
        let proto = b.func_proto(0, &params);
        let p = b.ptr(proto);
        b.typedef(&format!("btf_trace_{name}"), p);
    };
    for name in [
        "posix_lock_inode",
        "flock_lock_inode",
        "fcntl_setlk",
        "locks_remove_posix",
    ] {
        tp(&mut b, name, &[inode_ptr, fl_ptr, int]);
    }
    tp(&mut b, "sched_waking", &[task_ptr]);
    tp(&mut b, "sched_process_fork", &[task_ptr, task_ptr]);
    tp(&mut b, "sched_process_exit", &[task_ptr, boolean]);
    if new {
        tp(&mut b, "sched_switch", &[boolean, task_ptr, task_ptr, uint]);
    } else {
        tp(&mut b, "sched_switch", &[boolean, task_ptr, task_ptr]);
    }
    b.bytes()
}

#[test]
fn fast_offsets_resolve_both_file_lock_layouts() {
    for new in [false, true] {
        let btf = Btf::parse(&kernel_like(new)).unwrap();
        let o = fast_offsets(&btf).unwrap();
        // The same offsets whichever names the kernel uses.
        assert_eq!(
            (
                o.fl_blocker,
                o.fl_owner,
                o.fl_flags,
                o.fl_type,
                o.fl_pid,
                o.fl_file
            ),
            (0, 40, 48, 52, 56, 64),
            "new layout: {new}"
        );
        assert_eq!((o.fl_start, o.fl_end), (128, 136));
        assert_eq!((o.i_ino, o.i_sb, o.s_dev), (64, 40, 16));
        assert_eq!((o.f_op, o.fop_lock), (40, 16));
        assert_eq!(
            (o.t_pid, o.t_prio, o.t_comm, o.t_cpu),
            (1216, 112, 3072, 16)
        );
        assert_eq!(o.t_tgid, 1220);
        assert_eq!((o.t_state, o.t_exit_state), (24, 1200));
        assert_eq!(o.state_size, if new { 4 } else { 8 });
        assert_eq!(o.switch_state_arg, u16::from(new));
    }
}

#[test]
fn an_unexpected_layout_is_refused_with_its_reason() {
    // A kernel whose posix_lock_inode takes other arguments.
    let mut b = Builder::new();
    let int = b.int("int", 4);
    let void_ptr = b.ptr(0);
    let proto = b.func_proto(0, &[void_ptr, int]);
    let p = b.ptr(proto);
    b.typedef("btf_trace_posix_lock_inode", p);
    let btf = Btf::parse(&b.bytes()).unwrap();
    let e = fast_offsets(&btf).unwrap_err();
    assert_eq!(
        e.to_string(),
        "tracepoint posix_lock_inode has an unexpected prototype"
    );
    // Everything but one member.
    let blob = kernel_like(true);
    let btf = Btf::parse(&blob).unwrap();
    assert!(fast_offsets(&btf).is_ok());
    let mut renamed = blob.clone();
    let at = renamed
        .windows(10)
        .position(|w| w == b"exit_state")
        .unwrap();
    renamed[at..at + 10].copy_from_slice(b"exit_xxxxx");
    let btf = Btf::parse(&renamed).unwrap();
    assert_eq!(
        fast_offsets(&btf).unwrap_err().to_string(),
        "the kernel's BTF has no task_struct.exit_state"
    );
}

/// The running kernel's BTF, when it has one (no root needed: the file is world-readable).
#[test]
fn the_running_kernel_has_the_fields_the_fast_programs_read() {
    let Ok(Some(btf)) = Btf::from_sys() else {
        eprintln!("no /sys/kernel/btf/vmlinux: skipped");
        return;
    };
    assert!(btf.field("task_struct", "pid").is_some_and(|f| f.size == 4));
    assert!(
        btf.field("task_struct", "comm")
            .is_some_and(|f| f.size == 16)
    );
    assert!(btf.field("inode", "i_ino").is_some_and(|f| f.size == 8));
    assert!(
        btf.field_any("file_lock", &["c.flc_flags", "fl_flags"])
            .is_some()
    );
    let args = btf.tracepoint_args("sched_waking").unwrap();
    assert!(args[0].is_ptr_to("task_struct"), "{args:?}");
    let o = fast_offsets(&btf).unwrap();
    assert!(o.t_comm > 0 && o.fl_start > 0, "{o:?}");
}
