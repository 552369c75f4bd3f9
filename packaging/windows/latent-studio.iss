; Inno Setup script for Latent Studio on Windows.
;
; Build on Windows (Inno Setup 6.3 or newer), from the repository root:
;   pip install -e ".[package]"
;   python packaging\build.py --no-deb
;   "C:\Program Files (x86)\Inno Setup 6\ISCC.exe" packaging\windows\latent-studio.iss
; Output: dist\latent-studio-0.1.0-setup.exe
;
; dist\latent-studio\ holds latent-studio.exe (the window, no console) and
; latent-studio-cli.exe (the CLI, a console program over the same files).

#define AppName "Latent Studio"
#define AppVersion "0.1.0"
#define AppExe "latent-studio.exe"
#define CliExe "latent-studio-cli.exe"
#define Root "..\.."

[Setup]
AppId={{6C1E6E1A-3B7B-4A7E-9C1D-5A2F0B8E4D21}
AppName={#AppName}
AppVersion={#AppVersion}
AppPublisher=Latent Studio developers
DefaultDirName={autopf}\Latent Studio
DefaultGroupName={#AppName}
DisableProgramGroupPage=yes
; Per-user install by default (no administrator rights); the dialog offers all users.
PrivilegesRequired=lowest
PrivilegesRequiredOverridesAllowed=dialog
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
OutputDir={#Root}\dist
OutputBaseFilename=latent-studio-{#AppVersion}-setup
SetupIconFile={#Root}\assets\latent-studio.ico
UninstallDisplayIcon={app}\{#AppExe}
; The bundle is over a gigabyte of mostly torch DLLs: LZMA2 solid compression
; pays off, and the install size shown is taken from the files.
Compression=lzma2/max
SolidCompression=yes
LZMAUseSeparateProcess=yes
WizardStyle=modern
ChangesEnvironment=yes

[Languages]
Name: "english"; MessagesFile: "compiler:Default.isl"

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"
Name: "addtopath"; Description: "Add the latent-studio-cli command to PATH"; GroupDescription: "Command line:"; Flags: unchecked

[Files]
Source: "{#Root}\dist\latent-studio\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{autoprograms}\{#AppName}"; Filename: "{app}\{#AppExe}"; IconFilename: "{app}\{#AppExe}"
Name: "{autodesktop}\{#AppName}"; Filename: "{app}\{#AppExe}"; Tasks: desktopicon

[Registry]
Root: HKCU; Subkey: "Environment"; ValueType: expandsz; ValueName: "Path"; ValueData: "{olddata};{app}"; Tasks: addtopath; Check: NeedsAddPath(ExpandConstant('{app}'))

[Run]
Filename: "{app}\{#AppExe}"; Description: "{cm:LaunchProgram,{#AppName}}"; Flags: nowait postinstall skipifsilent

[UninstallDelete]
; Only what the program itself may leave in its folder; the user's settings,
; gallery and outputs under their profile stay.
Type: filesandordirs; Name: "{app}"

[Code]
function NeedsAddPath(Dir: string): Boolean;
var
  Paths: string;
begin
  if not RegQueryStringValue(HKEY_CURRENT_USER, 'Environment', 'Path', Paths) then
  begin
    Result := True;
    exit;
  end;
  Result := Pos(';' + Uppercase(Dir) + ';', ';' + Uppercase(Paths) + ';') = 0;
end;
