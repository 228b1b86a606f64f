//! Generates bindings for the system DPDK at build time.
//!
//! The compiler flags come from the `pkg-config` command itself, not the
//! pkg-config crate: that crate drops `-include rte_config.h` and `-march`,
//! without which DPDK's headers do not parse the same way the library was built.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const MIN_MAJOR: u32 = 22;
const MIN_MINOR: u32 = 11;

const INSTALL_HINT: &str = "install DPDK's development files: \
`apt-get install -y libdpdk-dev dpdk-dev pkg-config clang libclang-dev` \
(or run scripts/setup-host.sh as root)";

fn pkg_config(args: &[&str]) -> String {
    let out = Command::new("pkg-config")
        .args(args)
        .arg("libdpdk")
        .output();
    match out {
        Ok(o) if o.status.success() => {
            String::from_utf8(o.stdout).expect("pkg-config output is UTF-8")
        }
        Ok(o) => fail(&format!(
            "`pkg-config {} libdpdk` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => fail(&format!("cannot run pkg-config ({e})")),
    }
}

fn fail(why: &str) -> ! {
    // A panic in build.rs is what cargo shows as the build error; make it say
    // what to do rather than leave the user with a wall of missing symbols.
    panic!(
        "\n\ndpdk-sys: libdpdk >= {MIN_MAJOR}.{MIN_MINOR} is required: {why}.\nTo fix: {INSTALL_HINT}\n\n"
    );
}

fn check_version() {
    let v = pkg_config(&["--modversion"]);
    let v = v.trim();
    let mut it = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    if (major, minor) < (MIN_MAJOR, MIN_MINOR) {
        fail(&format!("found libdpdk {v}, which is too old"));
    }
    println!("cargo:rustc-env=DPDK_SYS_BUILT_AGAINST={v}");
}

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    check_version();
    let cflags: Vec<String> = pkg_config(&["--cflags"])
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let libs = pkg_config(&["--libs"]);

    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let header = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("wrapper.h");
    let extern_c = out.join("dpdk_static_fns");

    let bindings = bindgen::Builder::default()
        .header(header.to_str().unwrap())
        .clang_args(&cflags)
        // Offload flags are `RTE_BIT64(n)` function-like macros: let clang evaluate them.
        .clang_macro_fallback()
        .wrap_static_fns(true)
        .wrap_static_fns_path(&extern_c)
        .allowlist_function(FUNCTIONS)
        .allowlist_type(TYPES)
        .allowlist_var(VARS)
        .derive_default(true)
        .derive_debug(true)
        .layout_tests(false)
        .generate_comments(false)
        .prepend_enum_name(false)
        .generate()
        .unwrap_or_else(|e| {
            fail(&format!(
                "bindgen could not parse DPDK's headers ({e}); is libclang-dev installed?"
            ))
        });
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("write bindings.rs");

    // The generated C file defines a real (non-inline) symbol for every static
    // inline function the allowlist reached.
    let mut build = cc::Build::new();
    build
        .file(extern_c.with_extension("c"))
        .include(header.parent().unwrap())
        .opt_level(3)
        .warnings(false);
    for f in &cflags {
        build.flag(f);
    }
    build.compile("dpdk_sys_static_fns");

    // Dynamic link against the libraries pkg-config names; EAL loads the PMDs
    // from its plugin directory at run time.
    for tok in libs.split_whitespace() {
        if let Some(dir) = tok.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        } else if let Some(lib) = tok.strip_prefix("-l") {
            println!("cargo:rustc-link-lib=dylib={lib}");
        }
    }
}

/// Functions we call. A regex alternation: bindgen allowlists whole names.
const FUNCTIONS: &str = concat!(
    "dp_.*",
    "|rte_eal_(init|cleanup|remote_launch|wait_lcore|mp_wait_lcore|process_type|get_configuration)",
    "|rte_lcore_(id|count|to_socket_id|index)|rte_get_main_lcore|rte_get_next_lcore|rte_socket_id",
    "|rte_strerror|rte_get_tsc_hz|rte_rdtsc|rte_rdtsc_precise|rte_get_tsc_cycles|rte_pause",
    "|rte_pktmbuf_pool_create|rte_mempool_free|rte_mempool_avail_count|rte_mempool_in_use_count",
    "|rte_pktmbuf_(alloc|alloc_bulk|free|free_bulk|append|prepend|adj|trim|chain|headroom|tailroom|clone|linearize|is_contiguous|reset|refcnt_update)",
    "|rte_mbuf_refcnt_(read|update|set)",
    "|rte_eth_dev_(count_avail|get_port_by_name|get_name_by_port|info_get|configure|start|stop|close|socket_id|set_mtu|adjust_nb_rx_tx_desc|is_valid_port)",
    "|rte_eth_dev_rss_(hash_conf_get|reta_query)",
    "|rte_eth_(rx_queue_setup|tx_queue_setup|rx_burst|tx_burst|macaddr_get|link_get_nowait|link_get|stats_get|stats_reset|xstats_get|xstats_get_names|xstats_reset|promiscuous_enable|allmulticast_enable|find_next_owned_by|tx_done_cleanup)",
);

const TYPES: &str = concat!(
    "rte_mbuf|rte_mbuf_ext_shared_info|rte_mempool|rte_eth_conf|rte_eth_dev_info|rte_eth_rxconf|rte_eth_txconf",
    "|rte_eth_stats|rte_eth_xstat|rte_eth_xstat_name|rte_eth_link|rte_ether_addr|rte_eth_rss_conf|rte_eth_rss_reta_entry64",
    "|rte_proc_type_t|rte_lcore_state_t|lcore_function_t",
);

const VARS: &str = concat!(
    "RTE_ETH_RETA_GROUP_SIZE|RTE_ETH_(RX|TX)_OFFLOAD_.*|RTE_ETH_RSS_.*|RTE_ETH_MQ_(RX|TX)_.*|RTE_ETH_LINK_.*",
    "|RTE_MBUF_DEFAULT_.*|RTE_PKTMBUF_HEADROOM|RTE_MBUF_F_.*|RTE_MAX_LCORE|RTE_MAX_ETHPORTS",
    "|RTE_ETH_NAME_MAX_LEN|RTE_ETH_XSTATS_NAME_SIZE|RTE_ETHER_ADDR_LEN|SOCKET_ID_ANY|LCORE_ID_ANY",
    "|RTE_MEMPOOL_CACHE_MAX_SIZE|RTE_ETH_DEV_NO_OWNER|RTE_VER_.*",
);
