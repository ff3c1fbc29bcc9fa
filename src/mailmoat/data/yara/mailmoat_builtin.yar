// mailmoat's built-in YARA rules: a small, cheap set that is always loaded unless
// `[attachments] builtin_yara = false`. Add your own rules with `[attachments] yara_dir`.
// A rule whose meta has `verdict = "malware"` quarantines the message whatever its score;
// the others add YARA_MATCH to the score.

rule EICAR_Test_File
{
    meta:
        description = "The EICAR antivirus test string (a harmless test file)"
        // A definite verdict, not a hint: the message is quarantined whatever its score, so
        // a test of the gateway's antivirus path with EICAR shows what a virus would get.
        verdict = "malware"
    strings:
        // Two halves, so this rule file itself does not look like the test file to scanners.
        $head = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$"
        $tail = "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
    condition:
        $head and $tail and @tail[1] == @head[1] + 28
}

rule Script_Download_Cradle
{
    meta:
        description = "A script that downloads and runs something (PowerShell/VBA/JS download cradle)"
    strings:
        $dl1 = "DownloadString" nocase
        $dl2 = "DownloadFile" nocase
        $dl3 = "URLDownloadToFile" nocase
        $dl4 = "Invoke-WebRequest" nocase
        $dl5 = "bitsadmin /transfer" nocase
        $dl6 = "certutil -urlcache" nocase
        $dl7 = "MSXML2.XMLHTTP" nocase
        $run1 = "powershell" nocase
        $run2 = "WScript.Shell" nocase
        $run3 = "cmd.exe /c" nocase
        $run4 = "Shell.Application" nocase
        $run5 = "ShellExecute" nocase
    condition:
        filesize < 5MB and any of ($dl*) and any of ($run*)
}

rule HTML_Smuggling
{
    meta:
        description = "HTML that assembles a file in the browser and saves it (HTML smuggling)"
    strings:
        $save = "msSaveOrOpenBlob" nocase
        $blob = "new Blob(" nocase
        $url = "createObjectURL" nocase
        $dl = ".download" nocase
        $b64 = "atob(" nocase
    condition:
        filesize < 10MB and ($save or ($blob and $url and $dl) or ($blob and $b64 and $dl))
}

rule LNK_Runs_Command
{
    meta:
        description = "A Windows shortcut (.lnk) that starts PowerShell, cmd or mshta"
    strings:
        $ps = "powershell" nocase wide ascii
        $cmd = "cmd.exe" nocase wide ascii
        $mshta = "mshta" nocase wide ascii
    condition:
        uint32(0) == 0x0000004C and any of them
}
