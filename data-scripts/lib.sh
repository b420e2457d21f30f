# Shared by the data-scripts/*.sh download scripts; source it, then call `fetch_dataset`.
#
# fetch_dataset NAME ARCHIVE MD5 FOLDER BASE_URL
#   Downloads BASE_URL/ARCHIVE into a temporary folder inside the data root, checks its MD5
#   against MD5, unpacks it there, checks that it produced FOLDER, and only then renames FOLDER
#   into the data root (a rename within one file system is atomic). On any failure the temporary
#   folder is removed and nothing is left in the data root. An existing ROOT/FOLDER is left alone.
#
# Data root: first argument of the calling script, else $SPATIAL_REASONING_DATA, else ./data.
# Overrides (read by each script): <DATASET>_BASE_URL, else SPATIAL_REASONING_MIRROR, as the base
# URL (the archive is fetched from BASE/ARCHIVE); <DATASET>_MD5 for the expected checksum.

set -euo pipefail

die() {
    echo "error: $*" >&2
    exit 1
}

md5_of() {
    if command -v md5sum >/dev/null 2>&1; then
        md5sum "$1" | cut -d' ' -f1
    elif command -v md5 >/dev/null 2>&1; then
        md5 -q "$1"
    else
        die "neither md5sum nor md5 is installed"
    fi
}

download() { # URL FILE
    if command -v curl >/dev/null 2>&1; then
        local progress=-sS
        [ -t 2 ] && progress=--progress-bar
        curl -fL "$progress" --retry 3 --connect-timeout 30 -o "$2" "$1"
    elif command -v wget >/dev/null 2>&1; then
        wget -q -O "$2" "$1"
    else
        die "neither curl nor wget is installed"
    fi
}

fetch_dataset() { # NAME ARCHIVE MD5 FOLDER BASE_URL [ROOT]
    local name=$1 archive=$2 md5=$3 folder=$4 base=$5
    local root=${6:-${SPATIAL_REASONING_DATA:-./data}}
    local url="${base%/}/$archive"

    mkdir -p "$root"
    if [ -e "$root/$folder" ]; then
        echo "$name: $root/$folder already exists; nothing to do" \
            "(check it with: spatial-reasoning data verify)"
        return 0
    fi

    # Global (not local): the EXIT trap runs after this function has returned.
    _fetch_tmp=$(mktemp -d "$root/.download-$folder.XXXXXX")
    local tmp=$_fetch_tmp
    # Remove the temporary folder however we leave (error, mismatch, Ctrl-C, success).
    trap 'rm -rf "${_fetch_tmp:-}"' EXIT
    trap 'exit 130' INT TERM

    echo "$name: downloading $url"
    download "$url" "$tmp/$archive" || die "$name: download of $url failed"

    local got
    got=$(md5_of "$tmp/$archive")
    if [ "$got" != "$md5" ]; then
        die "$name: checksum mismatch for $archive from $url: expected md5 $md5, got $got;" \
            "nothing was unpacked into $root"
    fi
    echo "$name: md5 $got OK"

    mkdir "$tmp/unpack"
    case "$archive" in
        *.tar.gz | *.tgz) tar -xzf "$tmp/$archive" -C "$tmp/unpack" ;;
        *.zip)
            if command -v unzip >/dev/null 2>&1; then
                unzip -q "$tmp/$archive" -d "$tmp/unpack"
            else
                python3 -m zipfile -e "$tmp/$archive" "$tmp/unpack"
            fi
            ;;
        *) die "$name: unknown archive type $archive" ;;
    esac || die "$name: unpacking $archive failed"
    [ -d "$tmp/unpack/$folder" ] || die "$name: $archive does not contain $folder/"

    [ -e "$root/$folder" ] && die "$name: $root/$folder appeared while downloading; left it alone"
    mv "$tmp/unpack/$folder" "$root/$folder"
    echo "$name: ready in $root/$folder"
}
